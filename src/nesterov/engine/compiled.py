"""The ``compile`` backend: ``rule.update`` through ``torch.compile`` over chunks of the user's tensors.

One generated kernel steps a chunk of :data:`CHUNK` flattened tensors (a vectorised C++ loop per tensor on
CPU, Triton on CUDA), with hyperparameters as 0-d tensors and symbolic lengths: one compile per (rule,
device, dtypes, flags, size class), reused for every model and every schedule. A short last chunk is filled
with the optimizer's own two-element dummies, so the chunk length never changes. On CPU, small tensors and
large ones get kernels of their own (one thread, all threads), and after its compile a kernel's graph is
called directly (:meth:`Compiled.call_chunks`).
"""

from __future__ import annotations

import functools
import os
import re
import threading
import types

import torch

from nesterov.engine import compat
from nesterov.engine.kernels import Batch, apply_one, flat
from nesterov.rules.base import Rule

# Tensors per compiled call. Longer chunks mean fewer calls (a fixed cost each: ~15 µs called directly on CPU,
# ~60 µs through dynamo) but a longer first compile; 16 gives ResNet-50's 161 tensors 11 calls (7 + 4 by size).
CHUNK = int(os.environ.get("NESTEROV_COMPILE_CHUNK", 16))

# No size asserts in the generated wrapper: every input's dtype, rank and strides are fixed by how the chunks
# are built (and checked by dynamo's guards where a call goes through it), and the asserts cost ~28 µs per
# chunk of 16 NAdamW parameters here.
INDUCTOR_OPTIONS = {"size_asserts": False}

# Whether a CPU loop is shared among threads is decided here, per size class, never from the lengths a kernel
# was first compiled on: inductor would decide from the first call's lengths and the thread count at that
# moment, and its disk cache would keep the decision for every later process (a kernel first compiled on a
# small model, or under one thread, stepped ResNet-50 on one core: 2 × slower). Tensors below
# SERIAL_MAX_NUMEL elements go to a kernel compiled for one thread: a shared loop costs a fork and a join (a
# few µs), more than stepping a small tensor (LARS on 16 tensors of 2048 elements: 81 µs a call serial, 205
# shared; of 16384: 282 and 305; of 65536: 975 and 764). The others go to a kernel whose every loop is
# shared (``cpp.dynamic_threads``), with as many threads as torch has when it runs.
SERIAL_MAX_NUMEL = int(os.environ.get("NESTEROV_SERIAL_MAX_NUMEL", 1 << 14))
THREADING_OPTIONS = {True: {"cpp.threads": 1}, False: {"cpp.dynamic_threads": True}}  # by "serial"

# A value that several outputs use is recomputed in the one pass rather than written to a fresh buffer
# (realize_reads_threshold). That saves a whole-tensor write and read where a rule reuses a tensor-sized
# intermediate (LAMB's update direction feeds its norm and its step: 2.13 × torch's fused AdamW with it, 3.50 ×
# without, ResNet-50 shapes); LARS's kernel is slower with it (16 tensors of 2²⁰ elements: 1.67 × torch's fused
# SGD with it, 1.38 × without; ResNet-50 shapes 2.12 × and 1.89 ×). Same process, 2 threads, each.
RECOMPUTE_OPTIONS = {**INDUCTOR_OPTIONS, "realize_reads_threshold": 16}
WITHOUT_RECOMPUTE = frozenset({"lars"})


def inductor_options(rule: Rule, serial: bool) -> dict:
    return {**(INDUCTOR_OPTIONS if rule.name in WITHOUT_RECOMPUTE else RECOMPUTE_OPTIONS), **THREADING_OPTIONS[serial]}


def multi_apply(rule, params, grads, states, hypers, derived, flags, seeds, matrix):
    """The compiled body: :func:`apply_one` over a chunk (lists of 1-D tensors; ``seeds`` an int32 and
    ``matrix`` a bool tensor with one entry per tensor, or None)."""
    for i in range(len(params)):
        apply_one(rule, params[i], grads[i], [s[i] for s in states], hypers, derived, flags,
                  None if seeds is None else seeds[i], None if matrix is None else matrix[i])


# An input of a captured graph, as dynamo names it: a local, subscripts, and perhaps the length of a tensor.
_GRAPH_INPUT = re.compile(r"L\['(\w+)'\]((?:\[(?:\d+|'\w+')\])*(?:\.size\(\)\[0\])?)")
_MULTI_APPLY_ARGS = multi_apply.__code__.co_varnames[:multi_apply.__code__.co_argcount]


def graph_inputs_maker(expressions: list[str]):
    """A function of :func:`multi_apply`'s arguments that returns a captured graph's inputs in order (built
    from ``expressions``, see :func:`compat.graph_input_expressions`); None where one is not a plain path."""
    paths = []
    for expression in expressions:
        match = _GRAPH_INPUT.fullmatch(expression)
        if match is None or match[1] not in _MULTI_APPLY_ARGS:
            return None
        paths.append(match[1] + match[2])
    return eval(f"lambda {', '.join(_MULTI_APPLY_ARGS)}: ({', '.join(paths)},)", {})  # noqa: S307 - our own paths


class Compiled:
    """Process-wide cache of compiled :func:`multi_apply` kernels, one per signature.

    Each signature gets its own code object, so dynamo's per-function recompile limit never mixes
    signatures. ``auto`` compiles in a background thread while foreach keeps stepping.
    """

    def __init__(self):
        self.kernels: dict[tuple, object] = {}
        self.ready: dict[tuple, threading.Event] = {}
        self.errors: dict[tuple, BaseException] = {}
        self.lock = threading.Lock()
        self.dummies: dict[tuple, tuple] = {}
        self.direct: dict[tuple, tuple] = {}  # key -> (compiled graph, its inputs from multi_apply's arguments)

    def get(self, key: tuple, rule: Rule):
        with self.lock:
            kernel = self.kernels.get(key)
            if kernel is None:
                name = ("multi_apply_" + "_".join(str(k) for k in key)).replace(".", "_")[:200]
                code = multi_apply.__code__.replace(co_name=name)
                fn = types.FunctionType(code, multi_apply.__globals__, name)
                kernel = self.kernels[key] = torch.compile(
                    fn, dynamic=True, fullgraph=True,
                    backend=self._inductor_keeping_graph(key, inductor_options(rule, key[-1] == "serial")))
            return kernel

    def _inductor_keeping_graph(self, key: tuple, options: dict):
        """torch.compile's inductor backend, which also keeps the compiled graph of a CPU kernel to be called
        directly from then on (see :meth:`call_chunks`)."""
        def backend(gm, example_inputs):
            compiled = compat.compile_graph(gm, example_inputs, options)
            make = None
            if key[1] == "cpu" and compat.takes_inputs_as_arguments(compiled):
                make = graph_inputs_maker(compat.graph_input_expressions(gm))
            if make is not None:
                self.direct[key] = (compiled, make)
            return compiled

        return backend

    def call(self, key: tuple, *args) -> None:
        """``key``'s kernel on ``args`` (:func:`multi_apply`'s, the rule first)."""
        self.call_chunks([(key, args)])

    def call_chunks(self, calls: list[tuple[tuple, tuple]]) -> None:
        """Each ``(key, args)`` of ``calls``: ``key``'s kernel on ``args``.

        A compiled CPU kernel is called directly: its graph on the tensors dynamo would hand it. Dynamo's
        frame and guards cost ~45 µs a call here (NAdamW, 11 chunks of small tensors: 669 µs through dynamo,
        187 µs directly), and they check nothing a call can change: every input is a flat 1-D tensor of the
        dtype and device in ``key``, of two or more elements, the hyperparameters 0-d tensors, and the rest
        (the rule, its flags, the chunk length) is ``key`` itself. Otherwise (a first call, CUDA) the call goes
        through torch.compile, all calls under one entry of the compile settings (~50 µs); a compile happens
        inside a kernel's first call, with :func:`compat.refined_cpu_codegen`'s refinements."""
        if all(key in self.direct for key, _ in calls):
            for key, args in calls:
                compiled, make = self.direct[key]
                compiled(*make(*args))
            return
        with compat.no_duck_shapes(), compat.refined_cpu_codegen(), torch.no_grad():
            for key, args in calls:
                self.get(key, args[0])(*args)

    def warm_in_background(self, key: tuple, example: tuple) -> None:
        """Compile ``key`` in a background thread by calling it once on throw-away tensors (``example``).

        The thread is not a daemon: the interpreter waits for it at exit, since a compile cut off by the
        interpreter's shutdown can abort the process ("terminate called without an active exception").
        Inductor compiles in-process there (``compile_threads=1``), not in a pool of workers.
        """
        with self.lock:
            if key in self.ready:
                return
            self.ready[key] = threading.Event()

        def work():
            try:
                import torch._inductor.config as inductor_config

                with inductor_config.patch(compile_threads=1):
                    self.call(key, *example)
            except BaseException as err:  # noqa: BLE001 - reported to the stepping thread
                self.errors[key] = err
            finally:
                self.ready[key].set()

        threading.Thread(target=work, name="nesterov-compile", daemon=False).start()

    def is_ready(self, key: tuple) -> bool:
        event = self.ready.get(key)
        return event is not None and event.is_set() and key not in self.errors


COMPILED = Compiled()


def compile_key(rule: Rule, batch: Batch, flags: dict, serial: bool) -> tuple:
    p = batch.params[0]
    state_dtypes = tuple(str(s[0].dtype)[6:] for s in batch.states)
    return (rule.name, p.device.type, str(p.dtype)[6:], *state_dtypes, *(f"{k}{int(v)}" for k, v in flags.items()),
            CHUNK, "serial" if serial else "shared")


def size_classes(batch: Batch) -> list[tuple[bool, Batch]]:
    """``(serial, its tensors)`` for each size class present in ``batch`` (see :data:`SERIAL_MAX_NUMEL`); one
    class off the CPU, where a kernel's parallelism is the device's."""
    if batch.params[0].device.type != "cpu":
        return [(False, batch)]
    small, large = batch.split([p.numel() < SERIAL_MAX_NUMEL for p in batch.params])
    return [(serial, part) for serial, part in ((True, small), (False, large)) if part.params]


def _dummies(batch: Batch, count: int):
    """``count`` two-element stand-ins (param, grad, states) for the end of a short chunk, on the batch's
    device and dtypes: zeros, whose step every rule keeps finite."""
    p = batch.params[0]
    key = (p.device, p.dtype, tuple(s[0].dtype for s in batch.states), count)
    cached = COMPILED.dummies.get(key)
    if cached is None:
        make = lambda dtype: [torch.zeros(2, dtype=dtype, device=p.device) for _ in range(count)]  # noqa: E731
        cached = COMPILED.dummies[key] = (make(p.dtype), make(p.dtype), [make(s[0].dtype) for s in batch.states])
    return cached


def chunks(batch: Batch, hyper_tensors: dict, derived_tensors: dict):
    """The arguments of each compiled call: chunks of :data:`CHUNK` flattened tensors (padded)."""
    n = len(batch.params)
    for start in range(0, n, CHUNK):
        end = min(start + CHUNK, n)
        ps = batch.flat_params[start:end]
        gs = [flat(g) for g in batch.grads[start:end]]
        ss = [s[start:end] for s in batch.flat_states]
        seeds = None if batch.seeds is None else list(batch.seeds[start:end])
        matrix = list(batch.matrix[start:end])
        if end - start < CHUNK:
            pad = CHUNK - (end - start)
            dp, dg, ds = _dummies(batch, pad)
            ps, gs, ss = ps + dp, gs + dg, [s + d for s, d in zip(ss, ds)]
            seeds = None if seeds is None else seeds + [0] * pad
            matrix = matrix + [False] * pad
        device = ps[0].device
        seed_t = None if seeds is None else torch.tensor(seeds, dtype=torch.int32, device=device)
        yield ps, gs, ss, hyper_tensors, derived_tensors, seed_t, _matrix_tensor(tuple(matrix), device)


@functools.lru_cache(maxsize=256)
def _matrix_tensor(matrix: tuple[bool, ...], device: torch.device) -> torch.Tensor:
    """A chunk's per-tensor ``matrix`` flags as the bool tensor the kernel reads (a model has few patterns,
    so each is made once rather than every step)."""
    return torch.tensor(matrix, device=device)


def run_compiled(rule: Rule, batch: Batch, hyper_tensors: dict, derived_tensors: dict, flags: dict) -> None:
    calls = []
    for serial, part in size_classes(batch):
        key = compile_key(rule, part, flags, serial)
        if key not in COMPILED.kernels:
            # Compiled on realistic lengths first: inductor's vector width for a bf16 loop follows the first
            # call's lengths, and a model's first tensors are often its smallest.
            COMPILED.call(key, *warm_example(rule, part, hyper_tensors, derived_tensors, flags))
        calls += [(key, (rule, ps, gs, ss, h, d, flags, seeds, matrix))
                  for ps, gs, ss, h, d, seeds, matrix in chunks(part, hyper_tensors, derived_tensors)]
    COMPILED.call_chunks(calls)


def warm_example(rule: Rule, batch: Batch, hyper_tensors: dict, derived_tensors: dict, flags: dict) -> tuple:
    """Throw-away inputs shaped like ``batch``'s (one size class) for compiling its kernel in the background,
    with realistic lengths (inductor picks a bf16 loop's vector width from them)."""
    n = max(64, min(max(p.numel() for p in batch.params), 1 << 20))
    p = batch.params[0]
    make = lambda dtype: [torch.zeros(n, dtype=dtype, device=p.device) for _ in range(CHUNK)]  # noqa: E731
    hypers = {k: torch.full_like(t, 0.5) for k, t in hyper_tensors.items()}
    derived = {k: torch.full_like(t, 0.5) for k, t in derived_tensors.items()}
    seeds = None if batch.seeds is None else torch.zeros(CHUNK, dtype=torch.int32, device=p.device)
    matrix = torch.zeros(CHUNK, dtype=torch.bool, device=p.device)
    return (rule, make(p.dtype), make(p.dtype), [make(s[0].dtype) for s in batch.states], hypers, derived, flags,
            seeds, matrix)
