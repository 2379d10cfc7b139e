"""Backends: the ways one rule's step runs over an arena.

- ``eager``: :func:`fused_step` as plain tensor code — the readable reference every other backend is
  tested against (it materialises temporaries, so it is the slowest).
- ``foreach``: the rule's in-place ``torch._foreach_*`` restatement; a handful of kernels per arena, the
  fastest choice when launch overhead dominates (small models). Plain steps only: with bf16 state or a
  GradScaler it hands the step to ``eager``.
- ``compile``: :func:`fused_step` through ``torch.compile`` (one vectorised C++ loop on CPU, one Triton
  kernel on GPU); hyperparameters are 0-d tensors and sizes are dynamic, so a schedule or a new model
  never recompiles. One compiled kernel per (rule, dtypes, flags) per process, cached on disk by inductor.
- ``triton``: a hand-written Triton kernel (CUDA; on CPU only under ``TRITON_INTERPRET=1``, for tests).

``auto`` picks per arena: on CUDA ``triton`` where the rule has a kernel, else ``compile``; on CPU
``foreach`` for small arenas (a compiled call costs more than the few eager kernels it replaces) and
``compile`` for large ones. A compile that ``auto`` chose runs in a background thread while ``foreach``
keeps stepping, so a short run never waits for the compiler; the step switches over when it is ready.
If compiling fails, ``auto`` warns once and stays on ``foreach``.
"""

from __future__ import annotations

import os
import threading
import types
import warnings

import torch

from nesterov.engine.precision import round_to
from nesterov.rules.base import Rule

BACKENDS = ("auto", "compile", "triton", "foreach", "eager")

# Below this many elements per arena, ``auto`` on CPU keeps the eager foreach kernels: a compiled call
# has a fixed cost of ~20-60 µs, more than the 4-5 foreach kernels it would replace on small tensors.
AUTO_COMPILE_MIN_NUMEL = int(os.environ.get("NESTEROV_AUTO_COMPILE_MIN_NUMEL", 1 << 18))


# A value that several outputs use (LARS's scaled direction feeds both momentum and parameter) is
# recomputed in the one pass rather than written to a fresh arena-sized buffer: with inductor's default
# (realise after 4 reads) the buffer's allocation, page faults included, cost more than the whole step.
INDUCTOR_OPTIONS = {"realize_reads_threshold": 16}


def fused_step(rule: Rule, p, g, states, hypers, flags, step, grad_scale, found_inf, seed):
    """One step of ``rule`` on tensors ``p``/``g``/``states`` (flat or not), written back in place.

    Unscales ``g`` by ``grad_scale`` and, where ``found_inf`` is non-zero, keeps every output exactly as
    it was (GradScaler's skipped step), without a host synchronisation. States are computed in the
    parameter's dtype and rounded back to their own (stochastically into bf16, with ``seed``).
    """
    if grad_scale is not None:
        g = g.to(p.dtype) / grad_scale
    wide_states = [s.to(p.dtype) for s in states]
    new_p, *new_states = rule.update(p, g, *wide_states, step=step, **hypers, **flags)
    if found_inf is not None:
        skip = found_inf != 0
        new_p = torch.where(skip, p, new_p)
        new_states = [torch.where(skip, old, new) for old, new in zip(wide_states, new_states)]
    p.copy_(new_p)
    for s, new in zip(states, new_states):
        s.copy_(round_to(new, s.dtype, seed))


class _Compiled:
    """Process-wide cache of compiled :func:`fused_step` kernels, one per signature.

    Each signature gets its own code object, so dynamo's per-function recompile limit never mixes rules
    and every kernel is exactly one graph with dynamic sizes.
    """

    def __init__(self):
        self.kernels: dict[tuple, object] = {}
        self.ready: dict[tuple, threading.Event] = {}
        self.errors: dict[tuple, BaseException] = {}
        self.lock = threading.Lock()

    def get(self, key: tuple):
        with self.lock:
            kernel = self.kernels.get(key)
            if kernel is None:
                name = "fused_step_" + "_".join(str(k).replace(".", "_") for k in key)
                code = fused_step.__code__.replace(co_name=name[:200])
                fn = types.FunctionType(code, fused_step.__globals__, name[:200])
                kernel = self.kernels[key] = torch.compile(fn, dynamic=True, fullgraph=True, options=INDUCTOR_OPTIONS)
            return kernel

    def warm_in_background(self, key: tuple, example: tuple) -> None:
        """Compile ``key`` in a daemon thread by calling it once on throw-away tensors like ``example``.

        Everything slow happens in the thread, importing torch.compile's machinery included. Inductor
        compiles in-process there (``compile_threads=1``): a pool of compile workers would make the
        interpreter wait for them at exit, which a short run must not pay.
        """
        with self.lock:
            if key in self.ready:
                return
            self.ready[key] = threading.Event()

        def work():
            try:
                import torch._inductor.config as inductor_config

                with inductor_config.patch(compile_threads=1), torch.no_grad():
                    # grad mode is part of dynamo's guards: the same as on the stepping thread
                    self.get(key)(*example)
            except BaseException as err:  # noqa: BLE001 - reported to the stepping thread
                self.errors[key] = err
            finally:
                self.ready[key].set()

        threading.Thread(target=work, name="nesterov-compile", daemon=True).start()

    def is_ready(self, key: tuple) -> bool:
        event = self.ready.get(key)
        return event is not None and event.is_set() and key not in self.errors


COMPILED = _Compiled()

_triton_kernels: dict[str, object] = {}


def triton_available(device: torch.device) -> bool:
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    if device.type not in ("cpu", "cuda"):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_kernel(rule: Rule):
    """The hand-written Triton step of ``rule``, or None if it has none."""
    if rule.name not in _triton_kernels:
        from nesterov.engine import triton_kernels

        _triton_kernels[rule.name] = triton_kernels.STEPS.get(rule.name)
    return _triton_kernels[rule.name]


_warned: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
