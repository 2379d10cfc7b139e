"""Figures of a run (``curves.png``) and of a race (``compare.png``), drawn with matplotlib's Agg backend."""

from __future__ import annotations

import numpy as np

__all__ = ["curves_figure", "plot_compare", "plot_curves"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: list[dict], path, title: str = "", target: float | None = None,
                label_smoothing: float = 0.0) -> None:
    """Loss and accuracy against steps (top) and against training seconds (bottom)."""
    plt = _pyplot()
    fig = curves_figure(rows, title, target, label_smoothing)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_figure(rows: list[dict], title: str = "", target: float | None = None, label_smoothing: float = 0.0):
    """The figure of :func:`plot_curves`. Each legend sits above its column's top panel, outside every plot, so
    it never covers a curve (inside, the loss legend covered the start of the loss curve)."""
    smooth = f", label smoothing {label_smoothing:g}" if label_smoothing else ""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    for r, xkey, xlabel in ((0, "step", "step"), (1, "seconds", "training wall time (s)")):
        x = [row[xkey] for row in rows]
        ax = axes[r, 0]
        ax.plot(x, [row["train_loss"] for row in rows], label=f"train loss (mean since last eval{smooth})")
        ax.plot(x, [row["test_loss"] for row in rows], label="test loss")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("cross-entropy")
        ax.grid(alpha=0.3)
        ax = axes[r, 1]
        ax.plot(x, [100 * row["train_accuracy"] for row in rows], label="train accuracy")
        ax.plot(x, [100 * row["test_accuracy"] for row in rows], label="test accuracy")
        if target is not None:
            ax.axhline(100 * target, color="gray", ls="--", lw=1, label=f"target {100 * target:g} %")
        accs = [row["test_accuracy"] for row in rows] + [row["train_accuracy"] for row in rows]
        ax.set_ylim(max(0, 100 * min(accs) - 2), 100.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[0]:  # the bottom row draws the same lines against seconds: one legend per column
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02, 1.0, 0.1), mode="expand", ncol=2, frameon=False,
                  borderaxespad=0.0, fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_compare(curves: dict[str, list[list[dict]]], path, title: str = "", target: float | None = None,
                 key: str = "test_accuracy") -> None:
    """Test accuracy (or ``key="test_loss"``: test/validation loss) vs training seconds (left) and vs steps
    (right): one line per optimizer (mean over seeds), a band from the worst to the best seed.

    ``curves[label]`` is a list (one per seed) of metric rows with ``seconds``, ``step`` and ``key``.
    """
    plt = _pyplot()
    acc = key == "test_accuracy"
    scale = 100.0 if acc else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(13, 6), layout="constrained")
    lo_all, hi_all = 100.0, 0.0
    for i, (label, runs) in enumerate(curves.items()):
        color = f"C{i % 10}"
        for ax, xkey in ((axes[0], "seconds"), (axes[1], "step")):
            t_max = max(run[-1][xkey] for run in runs)  # a finished seed holds its final value
            grid = np.linspace(0, t_max, 200)
            ys = []
            for run in runs:  # the value known so far at each grid point (a step function; NaN before the 1st eval)
                xs = np.array([row[xkey] for row in run])
                val = np.array([scale * row[key] for row in run])
                k = np.searchsorted(xs, grid, side="right") - 1
                ys.append(np.where(k >= 0, val[np.clip(k, 0, None)], np.nan))
            ys = np.array(ys)  # NaN until every seed has been evaluated once: lines start there
            mean, lo, hi = ys.mean(0), ys.min(0), ys.max(0)
            ax.plot(grid, mean, color=color, lw=2, label=f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})")
            if len(runs) > 1:
                ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0)
            finals = [scale * r[-1][key] for r in runs]
            lo_all, hi_all = min(lo_all, float(np.min(finals))), max(hi_all, float(np.max(finals)))
    for ax, xlabel in ((axes[0], "training wall time (s)"), (axes[1], "step")):
        if target is not None:
            ax.axhline(scale * target, color="gray", ls="--", lw=1,
                       label=f"target {scale * target:g}{' %' if acc else ''}")
        if acc:
            ax.set_ylim(max(0.0, min(lo_all, 100 * (target or 1)) - 10), 100.2)
            ax.set_ylabel("test accuracy (%)")
        else:
            ax.set_ylim(0.9 * min(lo_all, target or lo_all), 1.6 * hi_all)
            ax.set_ylabel("test / validation loss (nats)")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(5, len(labels)), frameon=False)
    if title:
        fig.suptitle(title + "  (line: mean over seeds; band: worst to best seed)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
