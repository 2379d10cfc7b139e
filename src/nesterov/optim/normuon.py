"""``NorMuon``: Muon with row-normalised updates (:mod:`nesterov.rules.normuon`), on Muon's step.

A subclass of :class:`nesterov.Muon`: the same param groups and auxiliary rule, the same batched momentum
and Newton–Schulz (and whatever Muon's step gains), with one state entry more per matrix,
``row_second_moment`` (v, one value per output row). Under FSDP2 it is a DTensor split by rows like its
parameter, so each rank keeps the rows it holds.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, Replicate

from nesterov.engine.matrices import row_sharded
from nesterov.engine.precision import mix_seed, round_to
from nesterov.optim.muon import Muon
from nesterov.optim.validate import check_number
from nesterov.rules import muon as M
from nesterov.rules import normuon as NR

ROW_SALT = 0x4E4F524D  # a second rounding stream per matrix, so v's rounding is not the momentum's


class NorMuon(Muon):
    r"""NorMuon (arXiv 2510.05491): Muon's momentum and Newton–Schulz, then each output row divided by the
    root of its running mean square (β₂) and the update rescaled to Muon's Frobenius norm.

    Every argument is :class:`nesterov.Muon`'s, plus

    Args:
        beta2: β₂ in [0, 1), the decay of the per-row second moment (default 0.95).

    State per matrix: ``momentum_buffer`` (Muon's) and ``row_second_moment`` (shape ``(rows,)``).
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int | None = None, ns_coefficients=M.NS_COEFFICIENTS, eps: float = M.EPS,
                 weight_decay: float = 0.0, adjust_lr_fn: str | None = None, *, beta2: float = NR.BETA2, **kwargs):
        self._beta2 = beta2
        super().__init__(params, lr, momentum, nesterov, ns_steps, ns_coefficients, eps, weight_decay, adjust_lr_fn,
                         **kwargs)

    def extra_defaults(self) -> dict:
        return {"beta2": self._beta2}

    def check_hypers(self, group: dict, where: str) -> None:
        super().check_hypers(group, where)
        if group.get("use_muon", True):
            check_number(f"beta2{where}", group["beta2"], low=0.0, high=1.0, high_open=True)

    def state_shape(self, name: str, p: torch.Tensor) -> torch.Size:
        return torch.Size(p.shape[:1]) if name == NR.ROW_STATE else p.shape

    def _fit_state_muon(self, p: torch.Tensor, state: dict) -> None:
        super()._fit_state_muon(p, state)
        dtype = self.state_dtype or p.dtype
        v = state.get(NR.ROW_STATE)
        if v is None:
            state[NR.ROW_STATE] = _row_zeros(p, dtype)
        elif v.dtype != dtype or v.device != p.device:
            state[NR.ROW_STATE] = v.to(dtype=dtype, device=p.device)

    def _row_seed(self, p: torch.Tensor, salts: dict) -> int | None:
        seed = self._seed(p, salts)
        return None if seed is None else mix_seed(seed, ROW_SALT)

    def _eager_step(self, p: torch.Tensor, group: dict, ns: dict, salts: dict) -> None:
        state = self.state[p]
        buf, v = state["momentum_buffer"], state[NR.ROW_STATE]
        new_p, new_buf, new_v = NR.update(p, p.grad, buf.to(p.dtype), v.to(p.dtype), **self._rule_kwargs(p, group, ns),
                                          beta2=float(group["beta2"]))
        p.copy_(new_p)
        buf.copy_(round_to(new_buf, buf.dtype, self._seed(p, salts)))
        v.copy_(round_to(new_v, v.dtype, self._row_seed(p, salts)))

    def _shape_update(self, p: torch.Tensor, O: torch.Tensor, group: dict, salts: dict) -> torch.Tensor:
        v = self.state[p][NR.ROW_STATE]
        O, new_v = NR.normalise_rows(O.to(p.dtype), v.to(p.dtype), beta2=float(group["beta2"]))
        v.copy_(round_to(new_v, v.dtype, self._row_seed(p, salts)))
        return O


def _row_zeros(p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Zeros of shape ``(rows,)`` laid out like ``p``'s rows: a DTensor split the same way under FSDP2."""
    if not isinstance(p, DTensor):
        return torch.zeros(p.shape[0], dtype=dtype, device=p.device)
    local = p.to_local()
    if row_sharded(p):
        return DTensor.from_local(local.new_zeros(local.shape[0], dtype=dtype), p.device_mesh, p.placements,
                                  shape=torch.Size(p.shape[:1]), stride=(1,))
    return DTensor.from_local(local.new_zeros(p.shape[0], dtype=dtype), p.device_mesh,
                              [Replicate()] * p.device_mesh.ndim)
