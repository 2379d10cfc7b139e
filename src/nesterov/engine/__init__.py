"""The engine every optimizer of nesterov runs on: multi-tensor steps over the user's own tensors.

- :mod:`nesterov.engine.kernels`: the backends (eager, foreach, compile, torch) that run one rule over
  lists of parameters, gradients and optimizer-owned state;
- :mod:`nesterov.engine.compiled`: the ``compile`` backend (the rule through torch.compile, its kernels cached);
- :mod:`nesterov.engine.dispatch`: which backend steps a batch, and what a step prepares once;
- :mod:`nesterov.engine.precision`: low-precision state (bf16 with stochastic rounding);
- :mod:`nesterov.engine.matrices`: batched matrix work (Muon's Newton–Schulz);
- :mod:`nesterov.engine.compat`: the private torch symbols used anywhere.
"""
