"""The result object returned by :func:`nesterov.minimize`, and how it is made from the iteration's tensors."""

from __future__ import annotations

import torch

__all__ = ["OptimizeResult", "STATUS", "assemble"]

#: status code -> meaning
STATUS = {
    0: "converged: gradient-mapping norm <= tol",
    1: "maximum number of iterations reached",
    2: "objective or gradient not finite",
    3: "stopped by callback",
    4: "line search failed: no step size gave sufficient decrease",
}


class OptimizeResult(dict):
    """A dict with attribute access, shaped like :class:`scipy.optimize.OptimizeResult`.

    Fields set by :func:`nesterov.minimize`:

    ``x``        the solution (a tensor with the shape, dtype and device of ``x0``)
    ``fun``      F(x) = f(x) + g(x) (a float; a tensor of shape ``(B,)`` when batched)
    ``nit``      iterations taken (int; per problem when batched)
    ``nfev``     objective evaluations (each call of ``fun``, including those that also gave a gradient)
    ``ngev``     gradient evaluations (autograd backward passes or calls of ``grad``)
    ``success``  ``status == 0``
    ``status``   see :data:`STATUS`
    ``message``  what happened, in words
    ``L``        the final Lipschitz estimate 1/step
    ``history``  dict of lists, entry k for iterate k = 0..nit: ``fun`` (F(x_k)), ``grad_map``
                 (||y_k - x_k|| / step_k, NaN for k = 0), ``step``, ``restart`` (momentum reset after step k)
    """

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]

    def __dir__(self):
        return list(self.keys())

    def __repr__(self):
        if not self:
            return "OptimizeResult()"
        width = max(map(len, self.keys())) + 1
        lines = []
        for k, v in self.items():
            if k == "history":
                v = "{" + ", ".join(f"{h}: [{len(vals)} entries]" for h, vals in v.items()) + "}"
            text = repr(v).replace("\n", "\n" + " " * (width + 2))
            lines.append(f"{k.rjust(width)}: {text}")
        return "\n".join(lines)


def assemble(X, Fx, nit, status, step, hist: dict, n_hist: int, nfev: int, ngev: int, batched: bool):
    """The :class:`OptimizeResult` of B problems from the iteration's final tensors (each of leading size B) and
    its history (per key, one tensor of shape (B,) per iterate; the first ``n_hist`` are reported). One problem
    (``batched=False``) gets Python numbers and its history up to its own ``nit``."""
    B = status.shape[0]

    def tolist(key):
        stacked = torch.stack(hist[key][:n_hist])          # (n_hist, B): one transfer
        return stacked.tolist() if batched else stacked[:, 0].tolist()

    history = {key: tolist(key) for key in hist}
    status_l = status.tolist()
    if batched:
        counts_by = {c: status_l.count(c) for c in sorted(set(status_l))}
        message = "; ".join(f"{n} of {B}: {STATUS[c]}" for c, n in counts_by.items())
        res = OptimizeResult(x=X, fun=Fx, nit=nit, nfev=nfev, ngev=ngev,
                             success=status == 0, status=status, message=message, L=1.0 / step,
                             history=history)
    else:
        st = status_l[0]
        n = int(nit[0])
        message = STATUS[st]
        if st == 2:
            message += f" at iteration {n + 1}; x is the last iterate with a finite objective (iteration {n})"
        elif st == 4:
            message += f" at iteration {n + 1}; x is the last accepted iterate"
        history = {key: vals[: n + 1] for key, vals in history.items()}
        res = OptimizeResult(x=X[0], fun=float(Fx[0]), nit=n, nfev=nfev, ngev=ngev,
                             success=st == 0, status=st, message=message, L=float(1.0 / step[0]),
                             history=history)
    return res
