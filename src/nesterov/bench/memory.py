"""``nesterov bench memory``: bytes of optimizer state per parameter for each rule, full-width and with bf16
state, measured on ``optimizer.state`` after one step (so lazily made state is counted)."""

from __future__ import annotations

import argparse
import json

import torch

from nesterov.bench.specs import OPTIMIZERS
from nesterov.bench.timing import make_params

__all__ = ["memory_main"]


def memory_main(argv: list[str]) -> int:
    """Bytes of optimizer state per parameter for each rule and state dtype, measured on ``optimizer.state``."""
    ap = argparse.ArgumentParser(prog="nesterov bench memory", description=(
        "Bytes of optimizer state per parameter for each rule and state dtype, measured on optimizer.state."))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for name, make_spec in OPTIMIZERS.items():
        spec = make_spec()
        for state_dtype in (None, torch.bfloat16):
            params = make_params([(64, 64), (64,)], torch.device("cpu"), torch.float32)
            opt = spec.ours(params, backend="foreach", state_dtype=state_dtype)
            opt.step()
            numel = sum(p.numel() for p in params)
            state_bytes = sum(
                v.numel() * v.element_size()
                for s in opt.state.values() for v in s.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0  # per-element buffers, not 0-d counters
            )
            rows.append({"optimizer": name, "state_dtype": str(state_dtype or torch.float32)[6:],
                         "state_bytes_per_param": state_bytes / numel})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'optimizer':12s} {'state dtype':12s} {'state bytes / param':>20s}")
        for r in rows:
            print(f"{r['optimizer']:12s} {r['state_dtype']:12s} {r['state_bytes_per_param']:20.2f}")
    return 0
