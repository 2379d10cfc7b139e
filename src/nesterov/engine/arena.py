"""The flat arena: one parameter group's tensors of one (device, dtype) in contiguous buffers.

Every parameter becomes a view of ``flat_param``; its gradient and every state buffer are views of
``flat_grad`` and ``flat_states[name]`` at the same offsets. A step is then one fused elementwise pass
over a few long vectors, however many tensors the model has — the gradient vector split into pieces
that the kernel walks block by block.

Gradients land in the arena without a copy in the normal case: while ``p.grad`` is a view of the arena
autograd accumulates into it in place (``zero_grad(set_to_none=False)`` is one fill of ``flat_grad``);
after ``zero_grad(set_to_none=True)`` a tensor hook writes the fresh gradient into the parameter's slot
(cache-hot, just produced by backward) and hands autograd that slot, which it adopts as ``p.grad``. A
gradient that arrives some other way (assigned by hand, produced by DDP's buckets) is copied into its
slot at step time; the caller's tensor is never written. With ``adopt_large_grads`` (rules that can step
tensors whose gradients lie elsewhere) large gradients are not copied at all: they stay where autograd
made them, and :meth:`Arena.run_spans` hands them to the step as runs of their own.
"""

from __future__ import annotations

import weakref

import torch

# With ``adopt_large_grads``, gradients of at least this many elements stay where autograd made them and the
# step reads them there (copying one into its slot is a pass over memory); smaller ones are copied into
# their slots while still in cache, where they form one long run.
ADOPT_MIN_NUMEL = 1 << 16


def fits_arena(p: torch.Tensor) -> bool:
    """Whether ``p`` can become a view of a flat buffer (dense, strided, a plain tensor)."""
    return (
        type(p) in (torch.Tensor, torch.nn.Parameter)
        and p.layout == torch.strided
        and not p.is_sparse
        and p.numel() > 0
        and _dense(p)
    )


def _dense(p: torch.Tensor) -> bool:
    """Whether ``p``'s elements fill ``numel`` consecutive slots (contiguous, channels-last, ...)."""
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(p.shape, p.stride()) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def partition(params) -> tuple[dict[tuple, list[torch.Tensor]], list[torch.Tensor]]:
    """Split ``params`` into arena members by (device, dtype), and the ones that cannot be views."""
    buckets: dict[tuple, list[torch.Tensor]] = {}
    loose = []
    for p in params:
        if fits_arena(p):
            buckets.setdefault((p.device, p.dtype), []).append(p)
        else:
            loose.append(p)
    return buckets, loose


def zero_loose_grads(params, set_to_none: bool) -> None:
    """``zero_grad`` for parameters outside any arena, as torch.optim does it."""
    for p in params:
        if p.grad is not None:
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.zero_()


class Arena:
    """Parameters, gradients and optimizer state of one group on one (device, dtype), flat.

    ``states`` maps state names to their dtype. ``run_spans()`` returns the element ranges to update
    this step: maximal runs of consecutive parameters that have a gradient (and, for rules that count
    steps, the same step count), so a model with frozen parts still gets a few long passes.
    """

    def __init__(self, params: list[torch.Tensor], states: dict[str, torch.dtype], align: int = 1,
                 adopt_large_grads: bool = False):
        first = params[0]
        self.device, self.dtype = first.device, first.dtype
        self.adopt_min = ADOPT_MIN_NUMEL if adopt_large_grads and align == 1 else None
        # Small tensors first: their gradients land in one contiguous run, the large ones' are read in place.
        self.params = sorted(params, key=self._adopted) if self.adopt_min else list(params)
        # Each tensor's slot is a whole number of ``align`` elements (per-tensor rules see the arena as
        # rows of that length); the padding is zero everywhere and never belongs to a view.
        self.offsets, self.slots = [], []
        total = 0
        for p in self.params:
            self.offsets.append(total)
            self.slots.append(-(-p.numel() // align) * align)
            total += self.slots[-1]
        self.numel = total
        self.align = align
        self.flat_param = torch.zeros(total, dtype=self.dtype, device=self.device)
        self.flat_grad = torch.zeros(total, dtype=self.dtype, device=self.device)
        self.flat_states = {
            name: torch.zeros(total, dtype=dtype, device=self.device) for name, dtype in states.items()
        }
        self.param_views = self._views(self.flat_param)
        self.grad_views = self._views(self.flat_grad)
        self.state_views = {name: self._views(flat) for name, flat in self.flat_states.items()}
        # How many steps each parameter has taken part in (host side, no device sync; for rules that
        # do not count steps only zero vs non-zero is kept up to date), and whether none is zero.
        self.counts = [0] * len(self.params)
        self.all_stepped = False
        with torch.no_grad():
            for i, (p, view) in enumerate(zip(self.params, self.param_views)):
                view.copy_(p)
                p.data = view
                if p.grad is not None:
                    self._bind_grad(p, i)
        self._param_ptrs = [v.data_ptr() for v in self.param_views]
        self._whole = [(0, total, list(range(len(self.params))), None)]
        self._checked_grads: list = [None] * len(self.params)
        self._hooks = [self._register_hook(i) for i in range(len(self.params))]

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [self._view(flat, i) for i in range(len(self.params))]

    def _view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        p = self.params[i]
        return flat.as_strided(p.shape, p.stride(), self.offsets[i])

    def _register_hook(self, i: int):
        if not self.params[i].requires_grad:
            return None
        arena = weakref.ref(self)

        def land_in_arena(grad: torch.Tensor) -> torch.Tensor:
            # Called by autograd before it accumulates ``grad`` into p.grad.
            self_ = arena()
            if self_ is None or grad.is_sparse or self_.params[i].grad is not None:
                return grad  # accumulation goes into the existing p.grad (an arena view, or an adopted tensor)
            if self_._adopted(self_.params[i]):
                return grad  # autograd adopts the fresh tensor; the step reads it there
            slot = self_._view(self_.flat_grad, i)
            slot.copy_(grad)
            return slot  # a fresh view: autograd adopts it as p.grad without another copy

        return self.params[i].register_hook(land_in_arena)

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            if handle is not None:
                handle.remove()
        self._hooks = []

    def _bind_grad(self, p: torch.Tensor, i: int) -> None:
        """Copy a gradient that is not an arena view into its slot and point p.grad at the slot."""
        grad = p.grad
        if grad.layout != torch.strided:
            raise ValueError(
                "sparse gradients are not supported: NAG's momentum makes every update dense; "
                "use torch.optim.SparseAdam or a dense embedding"
            )
        if grad.shape != p.shape:
            raise ValueError(f"grad of shape {tuple(grad.shape)} does not match its parameter {tuple(p.shape)}")
        slot = self.grad_views[i]
        slot.copy_(grad)
        p.grad = slot

    def adopt_moved_params(self) -> None:
        """Pull back parameters whose ``.data`` was replaced (``module.to()``, ``p.data = ...``)."""
        with torch.no_grad():
            for i, p in enumerate(self.params):
                if p.data_ptr() != self._param_ptrs[i] or p.shape != self.param_views[i].shape:
                    if p.device != self.device or p.dtype != self.dtype or p.shape != self.param_views[i].shape:
                        raise RuntimeError(
                            "a parameter changed device, dtype or shape after the optimizer was built; "
                            "create the optimizer after moving the model"
                        )
                    self.param_views[i].copy_(p)
                    p.data = self.param_views[i]

    def run_spans(self, split_by_count: bool = False,
                  read_in_place: bool = True) -> list[tuple[int, int, list[int], torch.Tensor | None]]:
        """``[(start, end, indices, grad)]``: maximal runs of consecutive params that have a gradient.

        ``grad`` is None when the run's gradients are ``flat_grad[start:end]``: gradients that are not views
        of this arena are copied in first, except large ones with ``adopt_large_grads`` (and
        ``read_in_place``), each a run of its own with its gradient flat (``grad``). With
        ``split_by_count`` a run also never mixes parameters with different step counts (their bias
        corrections differ).
        """
        if self._all_in_place() and (not split_by_count or len(set(self.counts)) == 1):
            return self._whole  # every grad already is its arena view
        spans: list[tuple[int, int, list[int], torch.Tensor | None]] = []
        grad_ptrs = self._grad_ptrs()
        for i, p in enumerate(self.params):
            if p.data_ptr() != self._param_ptrs[i]:
                self.adopt_moved_params()
            grad = p.grad
            if grad is None:
                continue
            start, end = self.offsets[i], self.offsets[i] + self.slots[i]
            if grad.layout != torch.strided or grad.data_ptr() != grad_ptrs[i] or grad.stride() != p.stride():
                if read_in_place and self._adopted(p) and self._readable_in_place(grad, p):
                    spans.append((start, end, [i], grad.as_strided((p.numel(),), (1,))))  # in memory order
                    continue
                self._bind_grad(p, i)
            last = spans[-1] if spans else None
            if (
                last is not None
                and last[3] is None
                and last[1] == start
                and (not split_by_count or self.counts[last[2][-1]] == self.counts[i])
            ):
                spans[-1] = (last[0], end, last[2] + [i], None)
            else:
                spans.append((start, end, [i], None))
        return spans

    def _adopted(self, p: torch.Tensor) -> bool:
        """Whether ``p``'s fresh gradients stay where autograd made them (large, with ``adopt_large_grads``)."""
        return self.adopt_min is not None and p.numel() >= self.adopt_min

    def _readable_in_place(self, grad: torch.Tensor, p: torch.Tensor) -> bool:
        """Whether the step can read ``grad`` where it is: a plain dense tensor laid out like ``p``."""
        return (
            type(grad) is torch.Tensor
            and grad.layout == torch.strided
            and grad.dtype == self.dtype
            and grad.device == self.device
            and grad.stride() == p.stride()  # p is dense, so grad is too, in the same memory order
        )

    def _all_in_place(self) -> bool:
        """Whether every param and every grad is still its arena view (pointer checks only).

        A grad object already checked is remembered (a view of the arena, so holding it costs no
        memory), which makes the per-step check an identity test for unchanged grads.
        """
        checked = self._checked_grads
        try:
            for i, (p, p_ptr) in enumerate(zip(self.params, self._param_ptrs)):
                grad = p.grad
                if grad is None:  # (before the identity test: nothing checked yet is None too)
                    return False
                if grad is not checked[i]:
                    if grad.data_ptr() != self._grad_ptrs()[i] or grad.stride() != p.stride():
                        return False
                    checked[i] = grad
                if p.data_ptr() != p_ptr:
                    return False
        except RuntimeError:  # a sparse grad has no data pointer: the slow path explains it
            return False
        return True

    def _grad_ptrs(self) -> list[int]:
        ptrs = getattr(self, "_grad_ptr_cache", None)
        if ptrs is None:
            ptrs = self._grad_ptr_cache = [v.data_ptr() for v in self.grad_views]
        return ptrs

    def zero_grad(self, set_to_none: bool) -> None:
        if set_to_none:
            for p in self.params:
                p.grad = None
            return
        self.flat_grad.zero_()
        grad_ptrs = self._grad_ptrs()
        for i, p in enumerate(self.params):
            if p.grad is not None and p.grad.data_ptr() != grad_ptrs[i]:
                p.grad.detach_()
                p.grad.zero_()
