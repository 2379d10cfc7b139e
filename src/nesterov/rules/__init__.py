"""Update rules: the math of each optimizer, written once as plain tensor code.

A rule is a :class:`Rule`: the names of its per-parameter state buffers (in torch.optim's state_dict
names), how it reads a param group's hyperparameters, and ``update`` — a pure function from (param, grad,
states, hyperparameters) to the new (param, states). ``update`` is the readable reference: the engine runs
it as is (``eager``), compiles it (``compile``), and every restatement declared beside it (``foreach``,
``torch_kernel``, ``cpp_kernel``: a C++ file in this folder) is tested against it by
``tests/test_restatements.py``.
"""

from nesterov.rules.base import Rule

__all__ = ["Rule"]
