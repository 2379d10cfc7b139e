"""What ``nesterov bench step`` prints: progress on stderr, durations in a readable unit, the warning that the
machine was loaded, and the table; and the two messages it keeps out of the output (they are not about the bench).
"""

from __future__ import annotations

import logging
import sys
import time
import warnings

__all__ = ["LOAD_TOLERANCE", "Progress", "format_duration", "format_table", "load_warning", "quiet_known_noise",
           "relative_change"]

LOAD_TOLERANCE = 0.2


class Progress:
    """Lines to stderr while a long run goes: what starts, what finished and how long it took."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, message: str, end: str = "\n") -> None:
        if not self.quiet:
            print(message, end=end, file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_known_noise() -> None:
    """Silence two messages every run printed, and nothing else.

    Dynamo logs "Profiler record function ... will be ignored" when it traces ``torch.optim``'s
    ``step`` (wrapped in ``record_function`` for the profiler) for the "torch ... compiled" rows: the
    annotation is dropped from the compiled graph, which is what a benchmark wants. Inductor's lowering
    calls the deprecated ``torch._prims_common.check`` while compiling heavyball's kernels. A filter on
    the one logger / the one message, so every other warning still shows.
    """
    logger = logging.getLogger("torch._dynamo.variables.ctx_manager")
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage("Profiler record function %s will be ignored"))
    warnings.filterwarnings("ignore", message=r"`torch\._prims_common\.check` is deprecated", category=FutureWarning)


def relative_change(before: float, after: float) -> float:
    """How far two positive measurements are apart, as a fraction of the smaller (symmetric)."""
    return max(before, after) / min(before, after) - 1.0


def load_warning(triad_start: float, triad_end: float, ref_start_s: float, ref_end_s: float,
                 ref_name: str, tolerance: float = LOAD_TOLERANCE) -> str | None:
    """A warning when the triad bandwidth (GB/s) or the reference step (seconds) measured before and
    after the timed rounds moved by more than ``tolerance``: the machine was busy with something else."""
    moved = [relative_change(triad_start, triad_end), relative_change(ref_start_s, ref_end_s)]
    if max(moved) <= tolerance:
        return None
    return (f"warning: the machine was visibly loaded during the measurement (more than {tolerance:.0%} "
            f"apart, start → end): triad {triad_start:.1f} → {triad_end:.1f} GB/s, {ref_name} "
            f"{format_duration(ref_start_s)} → {format_duration(ref_end_s)}; absolute times are unreliable, "
            f"ratios less so (round-robin)")


def format_duration(seconds: float) -> str:
    """``seconds`` in the unit that shows three significant digits: µs, ms or s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _ms(value: float) -> str:
    """A milliseconds cell with at least three significant digits (0.00412, 0.412, 41.2, 4120)."""
    return f"{value:.3f}" if value >= 0.1 else f"{value:.3g}"


def format_table(result: dict) -> str:
    triad_start, triad_end = result["triad_GBps_start_end"]
    peers = result.get("peers") or {}
    versions = "".join(f" · {lib} {v}" for lib, v in peers.items() if v)
    lines = [
        f"{result['optimizer']} {result['measured']} · {result['shapes']} shapes: {result['params'] / 1e6:.2f}M params in "
        f"{result['tensors']} tensors · {result['dtype']} params, {result['state_dtype']} state · "
        f"{result['device']}, {result['threads']} thread{'s' if result['threads'] != 1 else ''} · "
        f"torch {result['torch']}{versions}",
        f"floor: {result['floor_bytes_per_param']} B/param ÷ in-place triad {result['triad_GBps']:.1f} GB/s "
        f"(start {triad_start:.1f}, end {triad_end:.1f}) = {format_duration(result['floor_ms'] / 1e3)} · "
        f"medians of {result['repeats']} steps",
        "",
        f"{'':36s} {'median ms':>10s} {'GB/s':>7s} {'× ' + (result['reference'] or '-'):>18s} "
        f"{'× floor':>8s} {'first step':>11s}",
    ]
    for r in result["rows"]:
        ref = f"{r['vs_reference']:.2f}" if r["vs_reference"] is not None else "-"
        note = r["note"] + ("; p.grad reset before each step (untimed)" if r.get("grads_restored") else "")
        lines.append(
            f"{r['name']:36s} {_ms(r['median_ms']):>10s} {r['effective_GBps']:7.1f} {ref:>18s} "
            f"{r['vs_floor']:8.2f} {format_duration(r['cold_start_ms'] / 1e3):>11s}"
            + (f"  {note.lstrip('; ')}" if note else "")
        )
    lines.append(f"{'bandwidth floor':36s} {_ms(result['floor_ms']):>10s}")
    lines += [f"({line})" for line in result.get("peers_skipped") or []]
    if result.get("load_warning"):
        lines += ["", result["load_warning"]]
    return "\n".join(lines)
