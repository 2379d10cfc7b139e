"""The group lasso :func:`group_l1`: disjoint groups of one problem's entries, given as index lists or as a label
tensor, and block soft thresholding."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Prox, _as, _check_param

__all__ = ["group_l1"]


class _GroupL1(Prox):
    _name = "group_l1"

    def __init__(self, lam, groups):
        if isinstance(groups, torch.Tensor):
            if groups.dtype.is_floating_point or groups.dtype == torch.bool:
                raise TypeError("groups as a tensor must hold integer group labels (-1 = no group)")
            labels = groups.detach().flatten().to(torch.int64).cpu()
            if labels.numel() == 0:
                raise ValueError("groups is empty")
            if bool((labels < -1).any()):
                raise ValueError("group labels must be >= 0 (or -1 for unpenalised entries)")
            uniq = torch.unique(labels[labels >= 0])
            remap = torch.full((int(labels.max()) + 2,), -1, dtype=torch.int64)
            remap[uniq] = torch.arange(uniq.numel())
            labels = torch.where(labels >= 0, remap[labels.clamp_min(0)], labels)
            self.n_groups = int(uniq.numel())
            self.size = int(labels.numel())
        elif isinstance(groups, Sequence) and not isinstance(groups, (str, bytes)):
            idx_lists = []
            for j, g in enumerate(groups):
                try:
                    idx = torch.as_tensor(list(g) if not isinstance(g, torch.Tensor) else g, dtype=torch.int64)
                except (TypeError, ValueError, RuntimeError):
                    raise TypeError(f"groups[{j}] must be a sequence of integer indices") from None
                idx_lists.append(idx.flatten())
            if not idx_lists:
                raise ValueError("groups is empty")
            allidx = torch.cat(idx_lists)
            if bool((allidx < 0).any()):
                raise ValueError("group indices must be >= 0")
            if allidx.unique().numel() != allidx.numel():
                raise ValueError("groups must be disjoint (an index appears in two groups or twice)")
            self.size = int(allidx.max()) + 1
            labels = torch.full((self.size,), -1, dtype=torch.int64)
            for j, idx in enumerate(idx_lists):
                labels[idx] = j
            self.n_groups = len(idx_lists)
        else:
            raise TypeError("groups must be a sequence of index sequences or an integer label tensor")
        self.labels = labels
        self.lam = _check_param(lam, "lam")
        if isinstance(self.lam, torch.Tensor) and self.lam.numel() not in (1, self.n_groups):
            raise ValueError(f"lam as a tensor must have one weight per group ({self.n_groups}), "
                             f"got shape {tuple(self.lam.shape)}")
        self._cache = {}

    def _setup(self, x, batch_dims):
        n = x[(0,) * batch_dims].numel() if batch_dims else x.numel()
        if n < self.size:
            raise ValueError(f"group_l1: groups cover {self.size} entries but a problem has only {n}")
        key = (x.device, n)
        if key not in self._cache:
            lab = self.labels
            if lab.numel() < n:   # entries past the largest listed index are in no group
                lab = torch.cat([lab, torch.full((n - lab.numel(),), -1, dtype=torch.int64)])
            elif lab.numel() > n:
                raise ValueError(f"group_l1: groups label {lab.numel()} entries but a problem has {n}")
            mask = lab >= 0
            self._cache[key] = (lab.clamp_min(0).to(x.device), mask.to(x.device))
        return self._cache[key]

    def _group_norms(self, x, batch_dims):
        lab, mask = self._setup(x, batch_dims)
        flat = x.reshape(x.shape[:batch_dims] + (-1,))
        sq = torch.where(mask, flat * flat, torch.zeros((), dtype=x.dtype, device=x.device))
        norms2 = flat.new_zeros(flat.shape[:-1] + (self.n_groups,)).index_add_(-1, lab, sq)
        return norms2.sqrt(), lab, mask, flat

    def _lam(self, x):
        lam = _as(self.lam, x)
        return lam.reshape(-1) if isinstance(lam, torch.Tensor) else lam

    def prox(self, x, step, batch_dims=0):
        norms, lab, mask, flat = self._group_norms(x, batch_dims)
        s = step.reshape(step.shape[:batch_dims] + (1,)) if step.dim() > 0 else step
        thresh = self._lam(x) * s
        scale = torch.clamp_min(1 - thresh / torch.clamp_min(norms, torch.finfo(x.dtype).tiny), 0)
        scale_e = torch.where(mask, scale.index_select(-1, lab), torch.ones((), dtype=x.dtype, device=x.device))
        return (flat * scale_e).reshape(x.shape)

    def value(self, x, batch_dims=0):
        norms = self._group_norms(x, batch_dims)[0]
        return (self._lam(x) * norms).sum(-1)


def group_l1(lam, groups) -> Prox:
    r"""Group lasso :math:`g(x) = \sum_j \lambda_j \lVert x_{G_j}\rVert_2` over disjoint groups of one
    problem's flattened entries.

    ``groups``: a list of index lists (entries in no group are unpenalised), or an integer tensor with one
    label per entry (``-1`` = no group). ``lam``: a number, or a tensor of one weight per group (the usual
    choice is ``lam * sqrt(len(G_j))``).

    prox: :math:`z_{G_j} = \max(0, 1 - s\lambda_j/\lVert x_{G_j}\rVert)\, x_{G_j}` (block soft thresholding).
    """
    return _GroupL1(lam, groups)
