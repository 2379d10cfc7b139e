"""Every private torch symbol nesterov uses, in one place (``tests/test_compat.py`` checks each exists).

torch does not promise these across releases; when one moves, this module is the only one to change.
"""

from __future__ import annotations

import contextlib
import inspect
import threading

import torch

# torch's fused SGD kernel (what ``torch.optim.SGD(fused=True)`` calls): in place over lists.
fused_sgd_ = torch._fused_sgd_

# Run a function eagerly even inside a torch.compile'd region (one graph break at the call).
disable_dynamo = torch._disable_dynamo

# Shape-symbol allocation: with duck shaping off, two tensors of equal length get separate symbols, so a
# compiled multi-tensor step never guards on (and never recompiles for) which lengths happen to be equal.
from torch.fx.experimental import _config as fx_config  # noqa: E402


def no_duck_shapes():
    return fx_config.patch(use_duck_shape=False)


# -- an inductor-compiled graph, called without dynamo ---------------------------------------------------------
def compile_graph(gm, example_inputs, options: dict):
    """What torch.compile's inductor backend does with a graph dynamo captured: a callable of its inputs."""
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs, config_patches=options)


def takes_inputs_as_arguments(compiled) -> bool:
    """Whether a callable ``compile_graph`` returned takes the graph's inputs as separate arguments (AOT
    autograd's usual wrapper), not boxed in one list that it empties (the wrapper for flattened inputs)."""
    code = getattr(compiled, "__code__", None)
    return code is not None and bool(code.co_flags & inspect.CO_VARARGS)


def graph_input_expressions(gm) -> list[str]:
    """Where each input of a graph dynamo captured comes from, as Python over the frame's locals:
    ``L['params'][3]``, ``L['params'][3].size()[0]`` (read inside a backend; dynamo drops it afterwards)."""
    return [node.meta["grapharg"].source.name for node in gm.graph.find_nodes(op="placeholder")]


def cpp_kernel_symbols() -> dict:
    """What :func:`load_cpp_kernel` calls, by name (imported on use: inductor takes seconds to import)."""
    from torch._inductor.codecache import CppPythonBindingsCodeCache

    return {"torch._inductor.codecache.CppPythonBindingsCodeCache.load_pybinding":
            CppPythonBindingsCodeCache.load_pybinding}


def load_cpp_kernel(argtypes: list[str], source: str, flags: tuple[str, ...] = ()):
    """C++ ``source`` defining ``extern "C" void kernel(...)``, compiled and loaded the way inductor builds its
    own CPU kernels (its compiler flags, then ``flags``; its OpenMP, so torch's thread count holds; its disk
    cache): a Python callable taking a tensor for each pointer in ``argtypes`` and an int for each ``int64_t``.
    Without inductor's vector-ISA flags (``needs_vec_isa=False``): the source uses no ``at::vec``, ``-march=native``
    stays, and probing the ISAs took 7 s of a 7.7 s first build in a fresh cache (0.6 s without)."""
    load = cpp_kernel_symbols()["torch._inductor.codecache.CppPythonBindingsCodeCache.load_pybinding"]
    return load(argtypes, source, needs_vec_isa=False, extra_flags=flags)


SYMBOLS = {
    "torch._fused_sgd_": fused_sgd_,
    "torch._disable_dynamo": disable_dynamo,
    "torch.fx.experimental._config.use_duck_shape": getattr(fx_config, "use_duck_shape"),
}


# -- inductor's CPU code generation, refined for nesterov's own compiled steps ---------------------------------
# Three choices inductor 2.13 makes for a loop that mixes fp32 and bf16 cost a bf16-state step 3-4 × its memory
# time on this AVX-512 CPU (scripts/bf16_rounding_cost.py):
# - it tiles by 16 lanes (fp32's width) unless *every* fused loop body is low-precision, so each bf16 load and
#   store fills half a 32-lane register through a masked memory access (NAG with bf16 state, one thread:
#   1.0 ns per element with tiling 16, 0.28 with 32, against 0.34 for fp32 state);
# - it has no vectorised float32 <-> int32 bit cast, so stochastic rounding's two casts go through a scalar
#   loop over a stack buffer (0.70 ns per element with a vector cast, 1.30 without, at tiling 32);
# - it builds each vector of element indices (the rounding hash's counter) from 16 scalars; a broadcast plus
#   a constant vector gives the same lanes (0.48 ns per element, 0.70 without).
# The refinements below apply only while ``refined_cpu_codegen()`` is entered in the compiling thread: a user's
# own torch.compile in another thread is generated as inductor would. Where a symbol moved (another torch),
# nothing is patched and the kernels are what inductor makes of them (slower with bf16 state, as exact).
_refine = threading.local()
_installed = False


# Part of the key of torch.compile's disk caches while the refinements are on: a kernel generated without
# them (or by an older version of them: bump the number) is never read back for one generated with them.
# (torch's config is process-wide: a compile in another thread meanwhile gets the tag in its key too, which
# only files its kernel apart.)
CODEGEN_TAG = "nesterov-cpu-codegen-2"


@contextlib.contextmanager
def refined_cpu_codegen():
    """Inside: inductor's CPU kernels compiled in this thread use the refinements above."""
    on = install_cpu_codegen_refinements()
    tag = torch.compiler.config.cache_key_tag
    previous = getattr(_refine, "on", False)
    _refine.on = on
    try:
        if on and CODEGEN_TAG not in tag:
            with torch.compiler.config.patch(cache_key_tag=f"{tag}+{CODEGEN_TAG}" if tag else CODEGEN_TAG):
                yield
        else:
            yield
    finally:
        _refine.on = previous


def cpu_codegen_symbols() -> dict:
    """The inductor internals the refinements replace or call, by name (also checked by tests/test_compat.py)."""
    from torch._inductor.codegen import cpp
    from torch._inductor.virtualized import V

    return {
        "torch._inductor.codegen.cpp.TilingSelect.select_tiling": cpp.TilingSelect.select_tiling,
        "torch._inductor.codegen.cpp.get_loop_body_lowp_fp": cpp.get_loop_body_lowp_fp,
        "torch._inductor.codegen.cpp._get_loop_body": cpp._get_loop_body,
        "torch._inductor.codegen.cpp.CppVecOverrides.to_dtype_bitcast": cpp.CppVecOverrides.to_dtype_bitcast,
        "torch._inductor.codegen.cpp.CppVecKernel.arange": cpp.CppVecKernel.arange,
        "torch._inductor.codegen.cpp.DTYPE_TO_CPP": cpp.DTYPE_TO_CPP,
        "torch._inductor.virtualized.V": V,
    }


def install_cpu_codegen_refinements() -> bool:
    """Wrap the inductor functions once (idempotent); False where this torch lacks one of them."""
    global _installed
    if _installed:
        return True
    try:
        symbols = cpu_codegen_symbols()
    except (ImportError, AttributeError):
        return False
    from torch._inductor.codegen import cpp

    V = symbols["torch._inductor.virtualized.V"]
    lowp_of = cpp.get_loop_body_lowp_fp
    select_tiling = cpp.TilingSelect.select_tiling
    scalar_bitcast = cpp.CppVecOverrides.to_dtype_bitcast
    arange = cpp.CppVecKernel.arange

    def refined_lowp_of(body):
        dtype, use_fp32 = lowp_of(body)
        return (getattr(_refine, "lowp", None) or dtype), use_fp32

    def refined_select_tiling(self, fn_list, var_sizes_list):
        if not getattr(_refine, "on", False):
            return select_tiling(self, fn_list, var_sizes_list)
        kinds = {lowp_of(body)[0] for body in cpp._get_loop_body(fn_list)} - {None}
        _refine.lowp = kinds.pop() if len(kinds) == 1 else None  # tile for the one low-precision dtype
        try:
            return select_tiling(self, fn_list, var_sizes_list)
        finally:
            _refine.lowp = None

    same_width = {torch.float32: torch.int32, torch.int32: torch.float32}

    def refined_bitcast(x, dtype, src_dtype):
        if not getattr(_refine, "on", False) or same_width.get(src_dtype) != dtype or getattr(x, "dtype", None) != src_dtype:
            return scalar_bitcast(x, dtype, src_dtype)
        n = V.kernel._get_num_vectors(src_dtype)
        target = cpp.DTYPE_TO_CPP[dtype]
        expr = (f"at::vec::cast<{target}>({x})" if n == 1 else
                f"[&]() {{ at::vec::VectorizedN<{target}, {n}> r; for (int k = 0; k < {n}; k++) "
                f"r[k] = at::vec::cast<{target}>({x}[k]); return r; }}()")
        result = V.kernel.cse.generate(V.kernel.compute, expr)
        result.update_on_args("to_dtype_bitcast", (x, dtype, src_dtype), {})
        result.dtype = dtype
        return result

    def refined_arange(self, index, stride):
        if not getattr(_refine, "on", False) or index.dtype != torch.int32 or not str(stride).lstrip("-").isdigit():
            return arange(self, index, stride)
        vec = self._get_vec_type(index.dtype)
        # Lane k is index + k·stride, wrapping in int32 like the scalar construction; the second term is a constant.
        result = self.cse.generate(self.compute, f"({vec}({index}) + {vec}::arange(0, {stride}))")
        result.dtype, result.is_vec = index.dtype, True
        return result

    cpp.get_loop_body_lowp_fp = refined_lowp_of
    cpp.CppVecKernel.arange = refined_arange
    cpp.TilingSelect.select_tiling = refined_select_tiling
    cpp.CppVecOverrides.to_dtype_bitcast = staticmethod(refined_bitcast)
    _installed = True
    return True
