"""LARS with Nesterov momentum (You, Gitman, Ginsburg 2017, arXiv 1708.03888): a trust ratio per tensor.

For each parameter tensor w (one segment of the flat span), with λ = weight_decay, κ = trust_coefficient:

    g  ← −g if maximize
    ρ  = κ·‖w‖ / (‖g‖ + λ·‖w‖ + ε)      (1 where ‖w‖ = 0 or ‖g‖ = 0)
    d  = ρ·(g + λ·w)
    b  ← μ·b + d
    w  ← w − η·(d + μ·b)              (Nesterov; w ← w − η·b without it)

With ``exclude_1d`` (default) 1-D tensors (biases, norm scales) get ρ = 1 and λ = 0: plain Nesterov SGD,
as in the authors' reference code (``exclude_from_weight_decay`` / ``exclude_from_layer_adaptation``).
The per-tensor norms and broadcasts are :mod:`nesterov.engine.segments`' (the span as rows, each inside one
tensor: row sums, and one factor per row).
"""

from __future__ import annotations

import torch

from nesterov.engine.segments import SpanRule, expand, rows, segment_norm


def update(p, g, momentum_buffer, *, step=None, block, block_ids, segment_lengths, matrix, lr, momentum,
           weight_decay, trust_coefficient, eps, maximize=False, nesterov=True, exclude_1d=True):
    shape = p.shape
    p, g, b = rows(p, block), rows(g, block), rows(momentum_buffer, block)
    if maximize:
        g = -g
    adapt = matrix if exclude_1d else torch.ones_like(matrix)
    decay = torch.where(adapt, torch.as_tensor(weight_decay, dtype=p.dtype), 0.0)  # a float would give float32
    segments = len(segment_lengths)
    w_norm, g_norm = segment_norm(p, block_ids, segments), segment_norm(g, block_ids, segments)
    trust = trust_coefficient * w_norm / (g_norm + decay * w_norm + eps)
    trust = torch.where(adapt & (w_norm > 0) & (g_norm > 0), trust, 1.0)
    d = expand(trust, block_ids, p) * (g + expand(decay, block_ids, p) * p)
    b = momentum * b + d
    p = p - lr * (d + momentum * b) if nesterov else p - lr * b
    return p.reshape(shape), b.reshape(shape)


def update_foreach_(params, grads, momentum_buffers, *, block, block_ids, segment_lengths, matrix, lr, momentum,
                    weight_decay, trust_coefficient, eps, maximize=False, nesterov=True, exclude_1d=True):
    """In-place restatement of :func:`update` on the span's per-tensor views (the small-model path)."""
    sizes = segment_lengths.tolist()[:-1]  # the last segment is padding
    ps, gs, bs = (list(t[0].split(sizes)) for t in (params, grads, momentum_buffers))
    if maximize:
        gs = torch._foreach_neg(gs)
    adapt = matrix.tolist()[:-1] if exclude_1d else [True] * len(sizes)
    w_norms = torch.stack(torch._foreach_norm(ps)).tolist()
    g_norms = torch.stack(torch._foreach_norm(gs)).tolist()
    decay = [weight_decay if a else 0.0 for a in adapt]
    trust = [trust_coefficient * w / (g + lam * w + eps) if a and w > 0 and g > 0 else 1.0
             for a, w, g, lam in zip(adapt, w_norms, g_norms, decay)]
    d = torch._foreach_mul(gs, trust)
    torch._foreach_add_(d, torch._foreach_mul(ps, [t * lam for t, lam in zip(trust, decay)]))
    torch._foreach_mul_(bs, momentum)
    torch._foreach_add_(bs, d)
    if nesterov:
        torch._foreach_add_(d, bs, alpha=momentum)
        torch._foreach_add_(ps, d, alpha=-lr)
    else:
        torch._foreach_add_(ps, bs, alpha=-lr)


LARS_RULE = SpanRule(
    name="lars",
    states=("momentum_buffer",),
    hypers=("lr", "momentum", "weight_decay", "trust_coefficient", "eps"),
    flags=("maximize", "nesterov", "exclude_1d"),
    update=update,
    update_foreach_=update_foreach_,
    per_tensor=True,
)
