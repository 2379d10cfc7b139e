"""Muon's benchmarks: its row in ``nesterov bench step`` and a training race on a small real problem.

``nesterov bench step --optimizer muon --shapes transformer --repeats 5 --warmup 1`` times one step of
``nesterov.Muon`` (matrices batched by shape, Newton–Schulz in the per-device default dtype, and in
float32) against ``torch.optim.Muon`` on the same matrices (+ ``torch.optim.NAdam`` on the vectors,
since torch's Muon refuses them), with torch's own bf16 Newton–Schulz and with float32.

``python -m nesterov.bench.muon train`` trains a 64-256-256-10 MLP on scikit-learn's digits with
Muon (all matrices, or the output layer given to the auxiliary NAdamW as Muon's authors advise) and
with NAdamW, over a small learning-rate grid each, and prints the training loss along the way.

``python -m nesterov.bench.muon parity`` prints the largest relative difference to torch.optim.Muon
(Newton–Schulz in float64 / float32 on both sides) over random configurations and 50 steps.

``python -m nesterov.bench.muon speed --peers`` times one whole step of Muon (default, and fp32 standard /
Gram / auto Newton–Schulz) and NorMuon against torch.optim.Muon and pytorch-optimizer's Muon and NorMuon,
round-robin in one process; ``ns`` times the standard and Gram iterations per shape and dtype;
``orthogonality`` prints max |σ − 1| and the spread of the output's singular values for each
coefficient set × method × dtype on matrices with a decaying spectrum.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch


@contextlib.contextmanager
def ns_in_input_dtype():
    """Inside: torch.optim.Muon's ``grad.bfloat16()`` returns a copy in the gradient's own dtype,
    so torch's unchanged code runs Newton–Schulz in float32 (or float64)."""
    original = torch.Tensor.bfloat16
    torch.Tensor.bfloat16 = lambda self, *args, **kwargs: self.clone()
    try:
        yield
    finally:
        torch.Tensor.bfloat16 = original


class TorchMuonWithNAdam:
    """What a torch user writes today: torch.optim.Muon on the 2-D tensors, NAdam on the rest."""

    def __init__(self, params, *, lr=0.02, momentum=0.95, weight_decay=0.0, fp32_ns=False):
        params = list(params)
        matrices = [p for p in params if p.dim() == 2]
        others = [p for p in params if p.dim() != 2]
        self.muon = torch.optim.Muon(matrices, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.nadam = torch.optim.NAdam(others, decoupled_weight_decay=True) if others else None
        self.fp32_ns = fp32_ns
        self.state = self.muon.state

    def zero_grad(self, set_to_none=True):
        self.muon.zero_grad(set_to_none)
        if self.nadam is not None:
            self.nadam.zero_grad(set_to_none)

    def step(self):
        if self.nadam is not None:
            self.nadam.step()
        with ns_in_input_dtype() if self.fp32_ns else contextlib.nullcontext():
            self.muon.step()


# bench step backends of ours: (Newton–Schulz dtype, method); None: the optimizer's default
NS_BACKENDS = {"ns-default": (None, "auto"), "ns-standard": (None, "standard"),
               "ns-float32": (torch.float32, "standard"), "ns-bfloat16": (torch.bfloat16, "standard"),
               "ns-float32-gram": (torch.float32, "gram")}


def muon_spec():
    """The ``muon`` row of ``nesterov bench step`` (a :class:`nesterov.bench.specs.BenchSpec`)."""
    from nesterov import Muon
    from nesterov.bench.specs import BenchSpec
    from nesterov.optim.muon import AUX

    hp = dict(lr=0.02, momentum=0.95, weight_decay=0.0)

    def ours(params, backend="ns-default", state_dtype=None):
        # ``backend`` names the Newton–Schulz dtype and method here; other names (bench memory) mean the default
        ns_dtype, ns_method = NS_BACKENDS.get(backend, NS_BACKENDS["ns-default"])
        return Muon(params, **hp, ns_dtype=ns_dtype, ns_method=ns_method, state_dtype=state_dtype)

    return BenchSpec(
        ours=ours,
        torch_alternatives={
            "torch Muon bf16 NS + NAdam": lambda ps: TorchMuonWithNAdam(ps, **hp),
            "torch Muon fp32 NS + NAdam": lambda ps: TorchMuonWithNAdam(ps, **hp, fp32_ns=True),
        },
        # the elementwise part only (read p, g, b; write p, b): Newton–Schulz is compute-bound
        bytes_per_param=lambda pb, sb: 3 * pb + 2 * sb,
        reference="torch Muon bf16 NS + NAdam",
        backends=("ns-default", "ns-standard", "ns-float32", "ns-float32-gram"),
        extra={"hp": {**hp, "aux": AUX["nadamw"][1]}},  # the auxiliary rule's defaults, for the peers
    )


# -- training race -------------------------------------------------------------------------------
def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=gen)
    x, y = x[order], y[order]
    return (x[:1500], y[:1500]), (x[1500:], y[1500:])


def _mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 10))


def train_curve(make_opt, steps, seed=0, batch=64):
    """Train loss per step (mean over the batch) and final full-train / test loss and accuracy."""
    (xtr, ytr), (xte, yte) = _digits()
    model = _mlp(seed)
    opt = make_opt(model)
    gen = torch.Generator().manual_seed(seed + 100)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(xtr), (batch,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        train = torch.nn.functional.cross_entropy(model(xtr), ytr).item()
        out = model(xte)
        test = torch.nn.functional.cross_entropy(out, yte).item()
        acc = (out.argmax(1) == yte).float().mean().item()
    return losses, train, test, acc


def train_main(argv):
    from nesterov import Muon, NAdamW

    ap = argparse.ArgumentParser(prog="python -m nesterov.bench.muon train")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    def head_to_aux(model, lr):
        # Muon's recommended split: the output layer (and the vectors) to the auxiliary NAdamW
        body = [p for p in model[:-1].parameters()]
        return Muon([{"params": body}, {"params": model[-1].parameters(), "use_muon": False, "lr": 5e-3}],
                    lr=lr)

    grids = {
        "Muon (+NAdamW aux)": [(lr, lambda m, lr=lr: Muon(m.parameters(), lr=lr)) for lr in (0.01, 0.02, 0.05, 0.1)],
        "Muon, head->NAdamW": [(lr, lambda m, lr=lr: head_to_aux(m, lr)) for lr in (0.01, 0.02, 0.05, 0.1)],
        "NAdamW": [(lr, lambda m, lr=lr: NAdamW(m.parameters(), lr=lr)) for lr in (1e-3, 2e-3, 5e-3, 1e-2)],
    }
    checkpoints = [s for s in (10, 25, 50, 100, 150, 200, 300) if s <= args.steps]
    print(f"digits MLP 64-256-256-10, batch 64, {args.steps} steps, mean of {args.seeds} seeds; "
          f"train loss = mean of the last 10 batch losses up to the step")
    best = {}
    for name, grid in grids.items():
        for lr, make in grid:
            runs = [train_curve(make, args.steps, seed) for seed in range(args.seeds)]
            curve = [statistics.mean(r[0][i] for r in runs) for i in range(args.steps)]
            final = statistics.mean(r[1] for r in runs)
            acc = statistics.mean(r[3] for r in runs)
            smooth = {s: statistics.mean(curve[max(0, s - 10):s]) for s in checkpoints}
            print(f"{name:19s} lr={lr:<6g} " + " ".join(f"@{s}:{v:.3f}" for s, v in smooth.items())
                  + f"  full-train loss {final:.4f}  test acc {acc:.3f}", flush=True)
            if name not in best or final < best[name][1]:
                best[name] = (lr, final, smooth, acc)
    print("\nbest of each grid (by final full-train loss):")
    for name, (lr, final, smooth, acc) in best.items():
        print(f"{name:19s} lr={lr:<6g} " + " ".join(f"@{s}:{v:.3f}" for s, v in smooth.items())
              + f"  full-train loss {final:.4f}  test acc {acc:.3f}")
    return 0


def parity_main(argv):
    """Max normwise relative difference to torch.optim.Muon (same NS dtype) over random configs."""
    import random

    from nesterov import Muon

    ap = argparse.ArgumentParser(prog="python -m nesterov.bench.muon parity")
    ap.add_argument("--configs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args(argv)
    rng = random.Random(0)
    for dtype in (torch.float64, torch.float32):
        worst = 0.0
        for trial in range(args.configs):
            shapes = [(rng.randint(1, 40), rng.randint(1, 40)) for _ in range(rng.randint(1, 4))]
            shapes = shapes * rng.randint(1, 3) + [s[::-1] for s in shapes]  # batched products too
            config = dict(lr=rng.uniform(1e-3, 0.1), momentum=rng.uniform(0, 0.99), nesterov=rng.random() < 0.5,
                          weight_decay=rng.choice([0.0, rng.uniform(0, 0.2)]), ns_steps=rng.randint(1, 6),
                          adjust_lr_fn=rng.choice([None, "original", "match_rms_adamw"]))
            gen = torch.Generator().manual_seed(trial)
            base = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
            targets = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
            theirs = [torch.nn.Parameter(b.clone()) for b in base]
            ours = [torch.nn.Parameter(b.clone()) for b in base]
            t_opt = torch.optim.Muon(theirs, **config)
            o_opt = Muon(ours, aux=None, ns_dtype=dtype, **config)
            for _ in range(args.steps):
                for t, o, target in zip(theirs, ours, targets):
                    g = torch.randn(t.shape, generator=gen, dtype=dtype) + 0.5 * (t.detach() - target)
                    t.grad, o.grad = g.clone(), g.clone()
                with ns_in_input_dtype():
                    t_opt.step()
                o_opt.step()
                for t, o in zip(theirs, ours):
                    scale = t.detach().abs().max().item()
                    worst = max(worst, (o.detach() - t.detach()).abs().max().item() / max(scale, 1e-300))
        print(f"{str(dtype)[6:]:8s} Newton–Schulz on both sides: {args.configs} random configurations × "
              f"{args.steps} steps, max relative difference {worst:.2e}", flush=True)
    return 0


def _po_normuon(params, lr, momentum):
    import pytorch_optimizer

    matrices = [p for p in params if p.dim() >= 2]
    return pytorch_optimizer.NorMuon([{"params": matrices, "use_muon": True}], lr=lr, momentum=momentum,
                                     foreach=True)


def speed_main(argv):
    """Standalone: one step of ours vs torch.optim.Muon (and the peers) on the transformer matrices, medians."""
    from nesterov import Muon, NorMuon
    from nesterov.bench.shapes import transformer_shapes

    ap = argparse.ArgumentParser(prog="python -m nesterov.bench.muon speed")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--peers", action="store_true", help="also pytorch-optimizer's Muon and NorMuon")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [s for s in transformer_shapes(args.blocks, args.d) if len(s) == 2]

    def params():
        gen = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        grads = [torch.randn(p.shape, generator=gen) * 1e-3 for p in ps]
        return ps, grads

    makers = {
        "torch.optim.Muon (bf16 NS)": lambda ps: TorchMuonWithNAdam(ps),
        "nesterov.Muon (default)": lambda ps: Muon(ps, aux=None),
        "nesterov.Muon (default NS dtype, standard)": lambda ps: Muon(ps, aux=None, ns_method="standard"),
        "nesterov.Muon (fp32 NS, standard)": lambda ps: Muon(ps, aux=None, ns_dtype=torch.float32,
                                                             ns_method="standard"),
        "nesterov.Muon (fp32 NS, gram)": lambda ps: Muon(ps, aux=None, ns_dtype=torch.float32, ns_method="gram"),
        "nesterov.Muon (fp32 NS, auto)": lambda ps: Muon(ps, aux=None, ns_dtype=torch.float32, ns_method="auto"),
        "nesterov.NorMuon (default)": lambda ps: NorMuon(ps, aux=None),
    }
    if args.peers:
        from nesterov.bench.peers import _po_muon
        from nesterov.optim.muon import AUX

        hp = dict(lr=0.02, momentum=0.95, weight_decay=0.0, aux=AUX["nadamw"][1])
        makers["pytorch-optimizer Muon (bf16 NS)"] = lambda ps: _po_muon(ps, hp)
        makers["pytorch-optimizer NorMuon (bf16 NS)"] = lambda ps: _po_normuon(ps, 0.02, 0.95)
    contenders = {}
    for name, make in makers.items():
        ps, grads = params()
        contenders[name] = (ps, grads, make(ps))
    times = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    for repeat in range(args.repeats + 1):  # round-robin, so load on the machine hits all alike; 0 warms up
        for name, (ps, grads, opt) in contenders.items():
            for p, g in zip(ps, grads):
                p.grad = g.clone()  # the peers write into p.grad
            t0, c0 = time.perf_counter(), time.process_time()
            opt.step()
            if repeat:
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    from nesterov.rules.muon import default_ns_dtype

    ref = statistics.median(times["torch.optim.Muon (bf16 NS)"])
    print(f"{len(shapes)} matrices ({args.blocks} blocks, d={args.d}), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; default NS dtype here: {default_ns_dtype(torch.device('cpu'), torch.float32)}; "
          f"medians of {args.repeats} steps (CPU time: this process's, less sensitive to other jobs)")
    for name, ts in times.items():
        med, c = statistics.median(ts), statistics.median(cpu[name])
        print(f"{name:44s} median {med * 1e3:8.1f} ms  cpu {c * 1e3:8.1f} ms  torch-bf16 / this = {ref / med:5.2f}")
    return 0


def _decaying(shape, gen, decades):
    """A float64 matrix with singular values 1 … 10^-decades, log-spaced, and random singular vectors."""
    m, n = shape
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return U @ torch.diag(torch.logspace(0, -decades, k, dtype=torch.float64)) @ V.T


def orthogonality_main(argv):
    """Singular values of Newton–Schulz's output against 1, per coefficient set × method × dtype, and the
    output's distance from the float64 standard iteration's (what the dtype and the method add)."""
    from nesterov.rules import muon as R

    ap = argparse.ArgumentParser(prog="python -m nesterov.bench.muon orthogonality")
    ap.add_argument("--shape", type=int, nargs=2, default=(256, 1024))
    ap.add_argument("--decades", type=float, default=3.0, help="singular values from 1 down to 10^-decades")
    ap.add_argument("--matrices", type=int, default=4)
    args = ap.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    mats = [_decaying(tuple(args.shape), gen, args.decades) for _ in range(args.matrices)]
    print(f"{args.matrices} matrices {args.shape[0]}×{args.shape[1]}, singular values 1 … 1e-{args.decades:g} "
          f"(log-spaced); worst over the matrices of max|σ−1|, of the spread σmax − σmin of the output, and of "
          f"‖O − O₆₄‖_F / ‖O₆₄‖_F against the float64 standard iteration")
    print(f"{'coefficients':14s} {'method':9s} {'dtype':9s} {'max|σ−1|':>9s} {'σmin':>7s} {'σmax':>7s} "
          f"{'spread':>7s} {'vs fp64':>9s}")
    for name in R.NS_COEFFICIENT_SETS:
        exact = [R.newton_schulz(G, coefficients=name, method="standard") for G in mats]
        for method in ("standard", "gram"):
            for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
                worst, lo, hi, err = 0.0, float("inf"), 0.0, 0.0
                for G, O64 in zip(mats, exact):
                    O = R.newton_schulz(G.to(dtype), coefficients=name, method=method).double()
                    s = torch.linalg.svdvals(O)
                    worst = max(worst, (s - 1).abs().max().item())
                    lo, hi = min(lo, s.min().item()), max(hi, s.max().item())
                    err = max(err, ((O - O64).norm() / O64.norm()).item())
                print(f"{name:14s} {method:9s} {str(dtype)[6:]:9s} {worst:9.3f} {lo:7.3f} {hi:7.3f} {hi - lo:7.3f} "
                      f"{err:9.1e}", flush=True)
    return 0


def ns_main(argv):
    """Newton–Schulz alone: standard vs Gram per shape (wide and tall) and dtype, medians of CPU time, the
    two methods taking turns so that a slow spell of the machine hits both."""
    from nesterov.rules import muon as R

    ap = argparse.ArgumentParser(prog="python -m nesterov.bench.muon ns")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--ratios", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"Newton–Schulz (5 steps) on {args.batch} stacked {args.rows}×(r·{args.rows}) matrices and their "
          f"transposes, {torch.get_num_threads()} threads; medians of {args.repeats} runs of this process's CPU time")
    for dtype in (torch.float32, torch.bfloat16):
        for r in args.ratios:
            for orientation in (("wide", "tall") if r > 1 else ("square",)):
                G = torch.randn(args.batch, args.rows, r * args.rows, generator=gen).to(dtype)
                if orientation == "tall":
                    G = G.mT.contiguous()
                ts: dict = {"standard": [], "gram": []}
                for method in ts:
                    R.newton_schulz(G, method=method)
                for _ in range(args.repeats):
                    for method in ts:
                        c0 = time.process_time()
                        R.newton_schulz(G, method=method)
                        ts[method].append(time.process_time() - c0)
                med = {method: statistics.median(t) for method, t in ts.items()}
                auto = "gram" if R.gram_pays(args.rows, r * args.rows, dtype) else "standard"
                print(f"{str(dtype)[6:]:9s} cols = {r}·rows {orientation:6s}  "
                      f"standard {med['standard'] * 1e3:8.1f} ms  gram {med['gram'] * 1e3:8.1f} ms  "
                      f"gram/standard {med['gram'] / med['standard']:5.2f}  auto: {auto}", flush=True)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": train_main, "speed": speed_main, "parity": parity_main, "ns": ns_main,
                "orthogonality": orthogonality_main}
    if not argv or argv[0] not in commands:
        print(f"usage: python -m nesterov.bench.muon {{{','.join(commands)}}} [options]", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
