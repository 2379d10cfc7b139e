"""The ``cpp`` backend: a rule's hand-written C++ kernel for CPU, where one is declared (``Rule.cpp_kernel``).

A kernel steps all the tensors of a call in one parallel region (see ``engine/per_tensor.h``); it is
built once per (rule, dtype) by inductor's C++ toolchain (:func:`compat.load_cpp_kernel`) and kept in its
disk cache. Only rules whose compiled form inductor cannot make bandwidth-bound have one: LARS and LAMB,
whose per-tensor norms must be summed before each tensor's step.
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
ARGTYPES = ["const int64_t*", "const int64_t*", "const bool*", "const double*", "int64_t"]
# After inductor's flags: its own kernels are vectorised by hand, so it turns gcc's loop vectoriser off and
# keeps errno for libm calls (which makes sqrt a scalar call); ours are plain loops. Contraction into FMAs
# stays off, as inductor has it: each operation rounds as the rule's does.
FLAGS = ("-ftree-loop-vectorize", "-fno-math-errno")


def source(rule: Rule, dtype: torch.dtype) -> str:
    """The C++ a kernel is built from: ``scalar_t``, the rule's arguments as a struct of doubles (in the
    order :func:`arguments` fills them), the shared header, then the rule's own file."""
    fields = " ".join(f"double {name};" for name in rule.cpp_args)
    return (f"using scalar_t = {DTYPES[dtype]};\nstruct Args {{ {fields} }};\n"
            f"{HEADER.read_text()}\n{(RULES_DIR / rule.cpp_kernel).read_text()}")


def supports(rule: Rule, device: torch.device, dtype: torch.dtype, state_dtype: torch.dtype) -> bool:
    """Whether ``rule``'s kernel steps these tensors: it has one, on CPU, in float32 or float64, with state
    of the parameter's dtype."""
    return rule.cpp_kernel is not None and device.type == "cpu" and dtype in DTYPES and state_dtype == dtype


class CppKernels:
    """Process-wide cache of built kernels, one per (rule, dtype); ``auto`` builds in a background thread."""

    def __init__(self):
        self.kernels: dict[tuple, object] = {}
        self.errors: dict[tuple, BaseException] = {}
        self.building: dict[tuple, threading.Event] = {}
        self.lock = threading.Lock()

    def get(self, rule: Rule, dtype: torch.dtype):
        """The kernel, built now if it is not yet (seconds in a fresh cache; ~1 s from the disk cache)."""
        key = (rule.name, dtype)
        with self.lock:
            event = self.building.get(key)
        if event is not None:
            event.wait()
        kernel = self.kernels.get(key)
        if kernel is None:
            kernel = self.kernels[key] = compat.load_cpp_kernel(ARGTYPES, source(rule, dtype), FLAGS)
        return kernel

    def build_in_background(self, rule: Rule, dtype: torch.dtype) -> None:
        key = (rule.name, dtype)
        with self.lock:
            if key in self.building or key in self.kernels:
                return
            event = self.building[key] = threading.Event()

        def work():
            try:
                self.kernels[key] = compat.load_cpp_kernel(ARGTYPES, source(rule, dtype), FLAGS)
            except BaseException as err:  # noqa: BLE001 - reported to the stepping thread
                self.errors[key] = err
            finally:
                event.set()

        # Not a daemon, like the compile thread (nesterov.engine.compiled): the interpreter waits for a build
        # at exit rather than cutting it off.
        threading.Thread(target=work, name="nesterov-cpp-build", daemon=False).start()

    def is_ready(self, rule: Rule, dtype: torch.dtype) -> bool:
        return (rule.name, dtype) in self.kernels


CPP = CppKernels()


def arguments(rule: Rule, hypers: dict, derived: dict, flags: dict) -> torch.Tensor:
    """The values of ``rule.cpp_args`` (hyperparameters, per-step scalars, flags) as float64, in order."""
    values = {**hypers, **derived, **flags}
    return torch.tensor([float(values[name]) for name in rule.cpp_args], dtype=torch.float64)


def step(rule: Rule, params, grads, states, matrix, hypers: dict, derived: dict, flags: dict) -> None:
    """``rule``'s kernel over lists of dense tensors, each param's grad and states laid out like it, all of
    one dtype on CPU: the params and states are written in place."""
    if not params:
        return
    kernel = CPP.get(rule, params[0].dtype)
    pointers = torch.tensor([t.data_ptr() for t in (*params, *grads, *(s for each in states for s in each))],
                            dtype=torch.int64)
    numel = torch.tensor([p.numel() for p in params], dtype=torch.int64)
    kernel(pointers, numel, torch.tensor(matrix, dtype=torch.bool), arguments(rule, hypers, derived, flags),
           len(params))


def run_cpp(rule: Rule, batch: Batch, hypers: dict, derived: dict, flags: dict) -> None:
    step(rule, batch.params, batch.grads, batch.states, batch.matrix, hypers, derived, flags)
