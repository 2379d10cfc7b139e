"""A small real training problem for the tests: an MLP on scikit-learn's bundled 8×8 digits."""

from __future__ import annotations

import torch


def train_digits(make_optimizer, *, seed: int = 0, epochs: int = 15) -> float:
    """Train a 64-128-10 MLP with ``make_optimizer(model)``; return its test accuracy (397 images)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=gen)
    train, test = order[:1400], order[1400:]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = make_optimizer(model)
    for _ in range(epochs):
        for idx in train[torch.randperm(len(train), generator=gen)].split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return (model(x[test]).argmax(1) == y[test]).float().mean().item()
