"""Learning-rate schedules as multipliers of the base lr, for ``torch.optim.lr_scheduler.LambdaLR``.

``Schedule(kind, total, warmup)(step)`` is the factor applied during step ``step`` (0-based) of ``total``:

- ``constant``        1;
- ``warmup-cosine``   linear from 1/w to 1 over the first ``w = warmup * total`` steps, then cosine to 0;
- ``linear``          the same warmup, then linear to 0;
- ``one-cycle``       Smith's one-cycle (torch's OneCycleLR shape, without momentum cycling): cosine from 1/25
                      up to 1 over ``warmup * total`` steps (0.3 if warmup is 0), then cosine down to 1/1e4.

A ``Schedule`` is a plain object, so ``LambdaLR.state_dict()`` saves it and a resumed run rebuilds it.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "Schedule"]

SCHEDULES = ("warmup-cosine", "constant", "linear", "one-cycle")


class Schedule:
    def __init__(self, kind: str, total: int, warmup: float = 0.1):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup must be a fraction of the run in [0, 1), got {warmup!r}")
        if total < 1:
            raise ValueError(f"total steps must be >= 1, got {total}")
        self.kind, self.total, self.warmup = kind, int(total), float(warmup)

    def __call__(self, step: int) -> float:
        t, n = step, self.total
        if self.kind == "constant":
            return 1.0
        if self.kind == "one-cycle":
            up = max(1, int((self.warmup or 0.3) * n))
            lo, end = 1 / 25, 1 / 25 / 1e4
            if t < up:
                return lo + (1 - lo) * (1 - math.cos(math.pi * t / up)) / 2
            frac = min(1.0, (t - up) / max(1, n - 1 - up))
            return end + (1 - end) * (1 + math.cos(math.pi * frac)) / 2
        w = int(self.warmup * n)
        if t < w:
            return (t + 1) / w
        frac = min(1.0, (t - w) / max(1, n - w))
        if self.kind == "linear":
            return 1.0 - frac
        return (1 + math.cos(math.pi * frac)) / 2

    def __repr__(self) -> str:
        return f"Schedule({self.kind!r}, total={self.total}, warmup={self.warmup})"
