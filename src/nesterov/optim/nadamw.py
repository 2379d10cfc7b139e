"""``NAdamW``: torch.optim.NAdam's exact update (decoupled weight decay by default)."""

from __future__ import annotations

from nesterov.optim.base import RuleOptimizer
from nesterov.optim.validate import check_adaptive, check_flags, check_number
from nesterov.rules.nadamw import NADAMW_RULE


class NAdamW(RuleOptimizer):
    r"""NAdam with decoupled weight decay: a drop-in for ``torch.optim.NAdam(..., decoupled_weight_decay=True)``.

    The update (μ-schedule, running ``mu_product``, bias correction) is torch's, step for step; with
    ``decoupled_weight_decay=False`` it is torch's plain NAdam (L2 added to the gradient). State and
    checkpoints use torch NAdam's layout (``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``), so either
    optimizer loads the other's state_dict. See :mod:`nesterov.rules.nadamw` for the formulas.

    Args:
        lr: learning rate η ≥ 0.  betas: (β1, β2), each in [0, 1).  eps: ε > 0 added to √v̂.
        weight_decay: λ ≥ 0.  momentum_decay: ψ ≥ 0 of the μ-schedule.
        decoupled_weight_decay: ``p ← p(1 − ηλ)`` (NAdamW, default) instead of ``g ← g + λp``.
        maximize: ascend instead of descend.
        backend, state_dtype: see :class:`~nesterov.optim.base.RuleOptimizer`; ``torch.bfloat16``
            state (stochastic rounding) halves the 8 bytes of state per fp32 parameter.
    """

    rule = NADAMW_RULE

    def __init__(self, params, lr: float = 2e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = True,
                 maximize: bool = False, *, backend: str = "auto", state_dtype=None):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)

    def group_defaults(self, group: dict) -> dict:
        # A group without the key was saved before torch NAdam had it, when its weight decay was L2 only:
        # such a group keeps that meaning (torch's NAdam.__setstate__ fills False too), whatever our default.
        return {**super().group_defaults(group), "decoupled_weight_decay": False}

    def check_hypers(self, group: dict, where: str) -> None:
        check_adaptive(group, where, betas=2)
        check_number(f"momentum_decay{where}", group["momentum_decay"], low=0.0)
        check_flags(group, where, ("decoupled_weight_decay", "maximize"))
