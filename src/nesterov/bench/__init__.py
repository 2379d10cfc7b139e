"""Benchmarks: commands that print ratios measured side by side in one process.

- :mod:`nesterov.bench.step`: ``nesterov bench step`` (one optimizer step, or a whole iteration; ours vs
  torch vs the bandwidth floor, and with ``--peers`` heavyball and pytorch-optimizer); what it measures in
  :mod:`nesterov.bench.specs`, how it times in :mod:`nesterov.bench.timing`, what it prints in
  :mod:`nesterov.bench.report`;
- :mod:`nesterov.bench.memory`: ``nesterov bench memory`` (optimizer state bytes per parameter);
- :mod:`nesterov.bench.peers`: the peer libraries' optimizers for each rule, with the rule's hyperparameters;
- :mod:`nesterov.bench.cold`: ``nesterov bench cold`` (the first steps of a fresh process with an empty
  compile cache, wall time, compilation included);
- :mod:`nesterov.bench.family`, :mod:`nesterov.bench.muon`: the rules' entries (and Muon's training race);
- :mod:`nesterov.bench.convex`: ``nesterov bench convex`` (the solver against gradient descent and L-BFGS-B):
  its problems, methods, convergence table and ``--overhead`` run in the ``convex_*`` modules beside it;
- :mod:`nesterov.bench.shapes`: the parameter sets.
"""
