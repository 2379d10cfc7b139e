"""The ``cpp`` backend: a rule's hand-written C++ kernel for CPU, where one is declared (``Rule.cpp_kernel``).

A kernel steps all the tensors of a call in one parallel region (see ``engine/per_tensor.h``); it is
built once per (rule, dtype, state dtype) by inductor's C++ toolchain (:func:`compat.load_cpp_kernel`), in a
second or two, and kept in its disk cache. Rules have one where the compiled rule falls short: LARS and
LAMB, whose per-tensor norms inductor cannot make bandwidth-bound, and NAG with bf16 state, whose compile
takes tens of seconds (the kernels take bf16 state, with stochastic rounding, for float32 parameters), and
the schedule-free rules, whose compile would outlast a short run's first steps and whose foreach restatement
needs temporaries the reference avoids by writing into ``p.grad``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from nesterov.engine import compat
from nesterov.engine.kernels import Batch
from nesterov.rules.base import Rule

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
HEADER = Path(__file__).resolve().parent / "per_tensor.h"
DTYPES = {torch.float32: "float", torch.float64: "double"}
STATE_DTYPES = {torch.bfloat16: "uint16_t"}  # narrower states, by the type holding their bits
ARGTYPES = ["const int64_t*", "const int64_t*", "const bool*", "const int64_t*", "const double*", "int64_t"]
# After inductor's flags: its own kernels are vectorised by hand, so it turns gcc's loop vectoriser off and
# keeps errno for libm calls (which makes sqrt a scalar call); ours are plain loops. Contraction into FMAs
# stays off, as inductor has it: each operation rounds as the rule's does.
FLAGS = ("-ftree-loop-vectorize", "-fno-math-errno")


def source(rule: Rule, dtype: torch.dtype, state_dtype: torch.dtype) -> str:
    """The C++ a kernel is built from: ``scalar_t`` and ``state_t``, the rule's arguments as a struct of doubles
    (in the order :func:`arguments` fills them), the shared header, then the rule's own file."""
    fields = " ".join(f"double {name};" for name in rule.cpp_args)
    state_type = DTYPES[dtype] if state_dtype == dtype else STATE_DTYPES[state_dtype]
    return (f"using scalar_t = {DTYPES[dtype]};\nusing state_t = {state_type};\nstruct Args {{ {fields} }};\n"
            f"{HEADER.read_text()}\n{(RULES_DIR / rule.cpp_kernel).read_text()}")


def supports(rule: Rule, device: torch.device, dtype: torch.dtype, state_dtype: torch.dtype) -> bool:
    """Whether ``rule``'s kernel steps these tensors: it has one, on CPU, float32 or float64 parameters with
    state of their dtype, or float32 parameters with bf16 state."""
    return (rule.cpp_kernel is not None and device.type == "cpu" and dtype in DTYPES
            and (state_dtype == dtype or (dtype == torch.float32 and state_dtype in STATE_DTYPES)))


class CppKernels:
    """Process-wide cache of built kernels, one per (rule, dtype, state dtype), and of failed builds."""

    def __init__(self):
        self.kernels: dict[tuple, object] = {}
        self.errors: dict[tuple, Exception] = {}
        self.lock = threading.Lock()

    def get(self, rule: Rule, dtype: torch.dtype, state_dtype: torch.dtype):
        """The kernel, built now if it is not yet (~2 s in a fresh cache, less from the disk cache)."""
        key = (rule.name, dtype, state_dtype)
        with self.lock:
            kernel = self.kernels.get(key)
            if kernel is None:
                kernel = self.kernels[key] = compat.load_cpp_kernel(ARGTYPES, source(rule, dtype, state_dtype),
                                                                    FLAGS)
            return kernel

    def try_get(self, rule: Rule, dtype: torch.dtype, state_dtype: torch.dtype):
        """:meth:`get`, or None where the build fails (the error kept in :attr:`errors`, never retried)."""
        key = (rule.name, dtype, state_dtype)
        if key in self.errors:
            return None
        try:
            return self.get(rule, dtype, state_dtype)
        except Exception as err:  # noqa: BLE001 - auto reports it and steps without the kernel
            self.errors[key] = err
            return None


CPP = CppKernels()


def arguments(rule: Rule, hypers: dict, derived: dict, flags: dict) -> torch.Tensor:
    """The values of ``rule.cpp_args`` (hyperparameters, per-step scalars, flags) as float64, in order."""
    values = {**hypers, **derived, **flags}
    return torch.tensor([float(values[name]) for name in rule.cpp_args], dtype=torch.float64)


def step(rule: Rule, params, grads, states, matrix, hypers: dict, derived: dict, flags: dict, seeds=None) -> None:
    """``rule``'s kernel over lists of dense CPU tensors, each param's grad and states laid out like it, the
    params (and grads) of one dtype, the states of one: params and states are written in place. ``seeds``:
    each tensor's stochastic-rounding seed, for bf16 state."""
    if not params:
        return
    kernel = CPP.get(rule, params[0].dtype, states[0][0].dtype)
    pointers = torch.tensor([t.data_ptr() for t in (*params, *grads, *(s for each in states for s in each))],
                            dtype=torch.int64)
    numel = torch.tensor([p.numel() for p in params], dtype=torch.int64)
    seeds = torch.tensor(seeds if seeds is not None else [], dtype=torch.int64)
    kernel(pointers, numel, torch.tensor(matrix, dtype=torch.bool), seeds, arguments(rule, hypers, derived, flags),
           len(params))


def run_cpp(rule: Rule, batch: Batch, hypers: dict, derived: dict, flags: dict) -> None:
    step(rule, batch.params, batch.grads, batch.states, batch.matrix, hypers, derived, flags, batch.seeds)
