"""``ScheduleFreeSGD`` and ``ScheduleFreeAdamW``: the reference ``schedulefree`` 1.4.1's updates, drop-in.

Both keep the reference's layout: state ``z`` (and AdamW's ``exp_avg_sq``) per parameter, and in each param
group the running scalars ``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr`` and the mode ``train_mode``, so
the mode travels in ``state_dict`` and a reference checkpoint loads. Unlike the reference, an optimizer starts
in train mode (code that never calls ``train()`` steps as it would with any optimizer) and never writes the
gradients.
"""

from __future__ import annotations

import torch

from nesterov.optim.base import RuleOptimizer
from nesterov.optim.validate import check_betas, check_number
from nesterov.rules.schedulefree import GROUP_SCALARS, SF_ADAMW_RULE, SF_SGD_RULE, switch_weight


def check_integer(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {low}, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


class ScheduleFreeOptimizer(RuleOptimizer):
    """What both schedule-free optimizers share: the schedule's hyperparameters and running scalars, and the
    switch between y (``train()``, the parameters' values while stepping) and x (``eval()``)."""

    def __init__(self, params, defaults: dict, *, backend: str, state_dtype):
        super().__init__(params, {**defaults, **GROUP_SCALARS, "train_mode": True}, backend=backend,
                         state_dtype=state_dtype)

    def averaging_beta(self, group: dict) -> float:
        """β of y = (1 − β)·z + β·x."""
        raise NotImplementedError

    def check_schedule(self, group: dict, where: str) -> None:
        check_number(f"lr{where}", group["lr"], low=0.0)
        check_number(f"weight_decay{where}", group["weight_decay"], low=0.0)
        check_integer(f"warmup_steps{where}", group["warmup_steps"], low=0)
        check_number(f"r{where}", group["r"], low=0.0)
        check_number(f"weight_lr_power{where}", group["weight_lr_power"], low=0.0)
        check_integer(f"k{where}", group["k"], low=0)
        check_number(f"lr_max{where}", group["lr_max"], low=-1.0)
        check_number(f"weight_sum{where}", group["weight_sum"], low=0.0)
        check_number(f"scheduled_lr{where}", group["scheduled_lr"], low=0.0)
        if not isinstance(group["train_mode"], bool):
            raise TypeError(f"train_mode{where} must be a bool, got {type(group['train_mode']).__name__}")

    def add_param_group(self, param_group: dict) -> None:
        """torch's, and a group added in eval mode starts in eval mode (its parameters have no z yet, so they
        are x and y at once)."""
        if self.param_groups and isinstance(param_group, dict) and "train_mode" not in param_group:
            param_group = {**param_group, "train_mode": self.param_groups[0]["train_mode"]}
        super().add_param_group(param_group)

    @torch.no_grad()
    def train(self) -> None:
        """Put the parameters at y, where gradients are taken (a no-op in train mode, where it starts)."""
        self._switch(to_train=True)

    @torch.no_grad()
    def eval(self) -> None:
        """Put the parameters at x, the averaged point to evaluate and save (a no-op in eval mode)."""
        self._switch(to_train=False)

    def _switch(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == to_train:
                continue
            weight = switch_weight(self.averaging_beta(group), to_train)
            for p in group["params"]:
                z = self.state[p].get("z") if p in self.state else None
                if z is not None:
                    p.lerp_(z.to(p.dtype), weight)
            group["train_mode"] = to_train

    def step(self, closure=None):
        """One step at y; refused in eval mode (the parameters then hold x), before anything runs."""
        for index, group in enumerate(self.param_groups):
            if not group["train_mode"]:
                raise RuntimeError(f"{type(self).__name__}.step() in eval mode (param group {index} holds the "
                                   f"averaged point x): call optimizer.train() before step()")
        return super().step(closure)


class ScheduleFreeSGD(ScheduleFreeOptimizer):
    r"""Schedule-free SGD, exactly the reference's ``SGDScheduleFree`` (formulas in
    :mod:`nesterov.rules.schedulefree`); no lr schedule is needed.

    Call ``optimizer.eval()`` before evaluating or saving the model (the parameters then hold the average
    x) and ``optimizer.train()`` before training again (they hold y, where gradients are taken). It starts
    in train mode; ``step()`` in eval mode raises.

    Args:
        lr: γ ≥ 0 (a float or a one-element tensor; schedulers scale it).  momentum: β in (0, 1), the
        interpolation y = (1 − β)·z + β·x.  weight_decay: λ ≥ 0, an L2 term added to the gradient at y.
        warmup_steps: linear warmup of γ over this many steps (inside the optimizer).  r: the average's
        polynomial weight t^r (≥ 0).  weight_lr_power: the average's weight max γ^p (≥ 0).
        backend, state_dtype: see :class:`~nesterov.optim.base.RuleOptimizer` (one state buffer, ``z``).
    """

    rule = SF_SGD_RULE

    def __init__(self, params, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0, *, backend: str = "auto",
                 state_dtype=None):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                        weight_lr_power=weight_lr_power)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)

    def averaging_beta(self, group: dict) -> float:
        return float(group["momentum"])

    def check_hypers(self, group: dict, where: str) -> None:
        self.check_schedule(group, where)
        check_number(f"momentum{where}", group["momentum"], low=0.0, high=1.0, low_open=True, high_open=True)


class ScheduleFreeAdamW(ScheduleFreeOptimizer):
    r"""Schedule-free AdamW, exactly the reference's ``AdamWScheduleFree`` (formulas in
    :mod:`nesterov.rules.schedulefree`); no lr schedule is needed.

    ``train()`` / ``eval()`` as :class:`ScheduleFreeSGD`.

    Args:
        lr: γ ≥ 0.  betas: (β1, β2), β1 in (0, 1) the interpolation y = (1 − β1)·z + β1·x, β2 in [0, 1) the
        second moment's.  eps: ε > 0 added to √v̂.  weight_decay: λ ≥ 0, added to the normalised gradient at
        y.  warmup_steps, r, weight_lr_power: as :class:`ScheduleFreeSGD`.
        backend, state_dtype: see :class:`~nesterov.optim.base.RuleOptimizer` (two state buffers, ``z`` and
        ``exp_avg_sq``).
    """

    rule = SF_ADAMW_RULE

    def __init__(self, params, lr: float = 0.0025, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0,
                 *, backend: str = "auto", state_dtype=None):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)

    def averaging_beta(self, group: dict) -> float:
        return float(group["betas"][0])

    def check_hypers(self, group: dict, where: str) -> None:
        self.check_schedule(group, where)
        check_betas(group, where, 2)
        check_number(f"betas[0]{where}", group["betas"][0], low=0.0, high=1.0, low_open=True, high_open=True)
        check_number(f"eps{where}", group["eps"], low=0.0, low_open=True)
