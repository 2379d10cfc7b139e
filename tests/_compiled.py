"""A training step inside torch.compile, beside the same steps run eagerly."""

from __future__ import annotations

import torch


def train_compiled_and_eager(model, opt, ref, ref_opt, steps: int = 3) -> None:
    """Train ``model`` with ``opt`` from inside a torch.compile'd step and ``ref`` with ``ref_opt`` eagerly,
    on the same batch (a 6-feature, 3-class problem)."""
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))

    @torch.compile
    def train_step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(steps):
        train_step()
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        ref_opt.step()
