"""Benchmarks: commands that print ratios measured side by side in one process.

- :mod:`nesterov.bench.step`: ``nesterov bench step`` (one optimizer step, or a whole iteration; ours vs
  torch vs the bandwidth floor, and with ``--peers`` heavyball and pytorch-optimizer) and ``nesterov bench memory``;
- :mod:`nesterov.bench.peers`: the peer libraries' optimizers for each rule, with the rule's hyperparameters;
- :mod:`nesterov.bench.cold`: ``nesterov bench cold`` (the first steps of a fresh process with an empty
  compile cache, wall time, compilation included);
- :mod:`nesterov.bench.family`, :mod:`nesterov.bench.muon`: the rules' entries (and Muon's training race);
- :mod:`nesterov.bench.convex`: ``nesterov bench convex`` (the solver against gradient descent and L-BFGS-B);
- :mod:`nesterov.bench.shapes`: the parameter sets.
"""
