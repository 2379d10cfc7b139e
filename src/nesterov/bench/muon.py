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


NS_BACKENDS = {"ns-default": None, "ns-float32": torch.float32, "ns-bfloat16": torch.bfloat16}


def muon_spec():
    """The ``muon`` row of ``nesterov bench step`` (a :class:`nesterov.bench.specs.BenchSpec`)."""
    from nesterov import Muon
    from nesterov.bench.specs import BenchSpec
    from nesterov.optim.muon import AUX

    hp = dict(lr=0.02, momentum=0.95, weight_decay=0.0)

    def ours(params, backend="ns-default", state_dtype=None):
        # ``backend`` names the Newton–Schulz dtype here; other names (bench memory) mean the default
        return Muon(params, **hp, ns_dtype=NS_BACKENDS.get(backend), state_dtype=state_dtype)

    return BenchSpec(
        ours=ours,
        torch_alternatives={
            "torch Muon bf16 NS + NAdam": lambda ps: TorchMuonWithNAdam(ps, **hp),
            "torch Muon fp32 NS + NAdam": lambda ps: TorchMuonWithNAdam(ps, **hp, fp32_ns=True),
        },
        # the elementwise part only (read p, g, b; write p, b): Newton–Schulz is compute-bound
        bytes_per_param=lambda pb, sb: 3 * pb + 2 * sb,
        reference="torch Muon bf16 NS + NAdam",
        backends=("ns-default", "ns-float32"),
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


def speed_main(argv):
    """Standalone: one step of ours vs torch.optim.Muon on the transformer matrices, medians."""
    from nesterov import Muon
    from nesterov.bench.shapes import transformer_shapes

    ap = argparse.ArgumentParser(prog="python -m nesterov.bench.muon speed")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [s for s in transformer_shapes(args.blocks, args.d) if len(s) == 2]

    def params():
        gen = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-3
        return ps

    contenders = {
        "torch.optim.Muon (bf16 NS)": TorchMuonWithNAdam(params()),
        "torch.optim.Muon (fp32 NS)": TorchMuonWithNAdam(params(), fp32_ns=True),
        "nesterov.Muon (default NS dtype)": Muon(params(), aux=None),
        "nesterov.Muon (fp32 NS)": Muon(params(), aux=None, ns_dtype=torch.float32),
        "nesterov.Muon (bf16 NS)": Muon(params(), aux=None, ns_dtype=torch.bfloat16),
    }
    times = {name: [] for name in contenders}
    for name, opt in contenders.items():  # warm-up
        opt.step()
    for _ in range(args.repeats):  # round-robin, so load on the machine hits all alike
        for name, opt in contenders.items():
            t0 = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    from nesterov.rules.muon import default_ns_dtype

    ref = statistics.median(times["torch.optim.Muon (bf16 NS)"])
    print(f"{len(shapes)} matrices ({args.blocks} blocks, d={args.d}), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; default NS dtype here: {default_ns_dtype(torch.device('cpu'), torch.float32)}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:34s} median {med * 1e3:9.1f} ms  (min {min(ts) * 1e3:9.1f})  torch-bf16 / this = {ref / med:5.2f}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": train_main, "speed": speed_main, "parity": parity_main}
    if not argv or argv[0] not in commands:
        print(f"usage: python -m nesterov.bench.muon {{{','.join(commands)}}} [options]", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
