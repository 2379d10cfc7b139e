"""The result object returned by :func:`nesterov.minimize`."""

from __future__ import annotations

__all__ = ["OptimizeResult", "STATUS"]

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
