"""``NAG``: Nesterov SGD with torch.optim.SGD(nesterov=True)'s exact update."""

from __future__ import annotations

from nesterov.optim.base import RuleOptimizer
from nesterov.optim.validate import check_flags, check_number
from nesterov.rules.nag import NAG_RULE


def check_nag(group: dict, where: str) -> None:
    check_number(f"lr{where}", group["lr"], low=0.0)
    check_number(f"momentum{where}", group["momentum"], low=0.0, high=1.0, high_open=True)
    check_number(f"dampening{where}", group["dampening"])
    if group["dampening"] != 0:
        raise ValueError(f"dampening{where} must be 0: Nesterov momentum is defined without dampening")
    check_number(f"weight_decay{where}", group["weight_decay"], low=0.0)
    check_flags(group, where, ("maximize",))
    if group.get("nesterov", True) is not True:
        raise ValueError(f"nesterov{where} must be True: NAG is Nesterov SGD (got a plain-momentum state)")


class NAG(RuleOptimizer):
    r"""Nesterov accelerated SGD, a drop-in for ``torch.optim.SGD(..., nesterov=True)``.

    .. math::
        g \leftarrow \pm g + \lambda p,\quad b \leftarrow \mu b + g,\quad p \leftarrow p - \eta (g + \mu b)

    (the sign flips with ``maximize``; see :mod:`nesterov.rules.nag`). State and checkpoints use torch
    SGD's layout (``momentum_buffer`` per parameter), so either optimizer loads the other's state_dict.

    Args:
        params: parameters, named parameters or param groups (dicts with per-group hyperparameters).
        lr: learning rate η ≥ 0 (a float or a one-element tensor).
        momentum: μ in [0, 1).
        dampening: must be 0 (Nesterov momentum is defined without dampening; torch requires the same).
        weight_decay: coupled L2 coefficient λ ≥ 0, added to the gradient before momentum.
        maximize: ascend instead of descend.
        backend: ``"auto"``, ``"torch"``, ``"compile"``, ``"foreach"`` or ``"eager"`` (see
            :mod:`nesterov.engine.kernels`); ``auto`` uses torch's fused SGD kernel where it is exact
            (float32/float64 on CPU, every float dtype on CUDA) and the compiled rule elsewhere.
        state_dtype: ``None`` (the parameter's dtype) or e.g. ``torch.bfloat16``: momentum in bf16
            with stochastic rounding, 16 instead of 20 bytes moved per fp32 parameter and step.
    """

    rule = NAG_RULE

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 0.0, maximize: bool = False, *, backend: str = "auto",
                 state_dtype=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        maximize=maximize, nesterov=True)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)

    def check_hypers(self, group: dict, where: str) -> None:
        check_nag(group, where)
