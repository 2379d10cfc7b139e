"""``LAMB``: layer-wise adaptive moments (You et al. 2019)."""

from __future__ import annotations

from nesterov.optim.base import RuleOptimizer
from nesterov.optim.validate import check_adaptive, check_flags
from nesterov.rules.lamb import LAMB_RULE


class LAMB(RuleOptimizer):
    r"""LAMB: Adam's bias-corrected direction plus weight decay, scaled per tensor by ‖w‖ / ‖r‖.
    Formulas in :mod:`nesterov.rules.lamb`; state ``step``, ``exp_avg``, ``exp_avg_sq`` as torch Adam.

    Args:
        lr: η ≥ 0.  betas: (β1, β2), each in [0, 1).  eps: ε > 0.  weight_decay: λ ≥ 0.
        exclude_1d: 1-D tensors (biases, norms) get neither the trust ratio nor weight decay (default).
        maximize: ascend.  backend, state_dtype: see :class:`~nesterov.optim.base.RuleOptimizer`.
    """

    rule = LAMB_RULE

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, exclude_1d: bool = True, maximize: bool = False, *,
                 backend: str = "auto", state_dtype=None):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, exclude_1d=exclude_1d, maximize=maximize)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)

    def check_hypers(self, group: dict, where: str) -> None:
        check_adaptive(group, where, betas=2)
        check_flags(group, where, ("exclude_1d", "maximize"))
