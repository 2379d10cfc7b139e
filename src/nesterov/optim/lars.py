"""``LARS``: layer-wise adaptive rate scaling with Nesterov momentum."""

from __future__ import annotations

from nesterov.optim.base import RuleOptimizer
from nesterov.optim.validate import check_flags, check_number
from nesterov.rules.lars import LARS_RULE


class LARS(RuleOptimizer):
    r"""LARS (You et al. 2017) with Nesterov momentum: SGD whose step is scaled per tensor by
    κ‖w‖ / (‖g‖ + λ‖w‖ + ε). Formulas in :mod:`nesterov.rules.lars`; state ``momentum_buffer`` per
    parameter, as torch SGD.

    Args:
        lr: η ≥ 0 (the global rate; LARS is used with large ones, e.g. 0.1 · batch/256 · 1/κ scaled).
        momentum: μ in [0, 1).  weight_decay: λ ≥ 0.  trust_coefficient: κ > 0.  eps: ε > 0.
        nesterov: Nesterov momentum (default) or heavy ball.  exclude_1d: 1-D tensors (biases, norms)
            get neither the trust ratio nor weight decay (default True).  maximize: ascend.
        backend, state_dtype: see :class:`~nesterov.optim.base.RuleOptimizer`.
    """

    rule = LARS_RULE

    def __init__(self, params, lr: float = 1e-1, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 1e-3, eps: float = 1e-8, nesterov: bool = True,
                 exclude_1d: bool = True, maximize: bool = False, *, backend: str = "auto", state_dtype=None):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, nesterov=nesterov, exclude_1d=exclude_1d, maximize=maximize)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)

    def check_hypers(self, group: dict, where: str) -> None:
        check_number(f"lr{where}", group["lr"], low=0.0)
        check_number(f"momentum{where}", group["momentum"], low=0.0, high=1.0, high_open=True)
        check_number(f"weight_decay{where}", group["weight_decay"], low=0.0)
        check_number(f"trust_coefficient{where}", group["trust_coefficient"], low=0.0, low_open=True)
        check_number(f"eps{where}", group["eps"], low=0.0, low_open=True)
        check_flags(group, where, ("nesterov", "exclude_1d", "maximize"))
