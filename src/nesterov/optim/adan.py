"""``Adan``: adaptive Nesterov momentum (Xie et al. 2022), the reference implementation's update."""

from __future__ import annotations

from nesterov.optim.base import RuleOptimizer
from nesterov.optim.validate import check_adaptive, check_flags
from nesterov.rules.adan import ADAN_RULE


class Adan(RuleOptimizer):
    r"""Adan: Nesterov momentum estimated from gradients and their differences (arXiv 2208.06677).

    Same update and state names as the authors' code (``exp_avg``, ``exp_avg_sq``, ``exp_avg_diff``,
    ``pre_grad``), with a per-parameter ``step``; formulas in :mod:`nesterov.rules.adan`.

    Args:
        lr: η ≥ 0.  betas: (β1, β2, β3) in the reference convention (1 − β_paper), each in [0, 1).
        eps: ε > 0.  weight_decay: λ ≥ 0.  no_prox: decoupled decay ``p(1 − ηλ)`` instead of the
        proximal ``p / (1 + ηλ)``.  maximize: ascend.
        backend, state_dtype: see :class:`~nesterov.optim.base.RuleOptimizer` (4 state buffers: 16 bytes
            per fp32 parameter, 8 with ``torch.bfloat16`` state).
    """

    rule = ADAN_RULE

    def __init__(self, params, lr: float = 1e-3, betas=(0.98, 0.92, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.0, no_prox: bool = False, maximize: bool = False, *,
                 backend: str = "auto", state_dtype=None):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, no_prox=no_prox, maximize=maximize)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)

    def check_hypers(self, group: dict, where: str) -> None:
        check_adaptive(group, where, betas=3)
        check_flags(group, where, ("no_prox", "maximize"))
