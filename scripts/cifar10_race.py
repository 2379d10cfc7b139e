#!/usr/bin/env python
"""CIFAR-10 to 94 %: nesterov's NAG (and optionally Muon) against torch.optim.SGD on the same recipe.

One call on a CUDA machine with the CIFAR-10 python batches at PATH (``cifar-10-batches-py``, nothing is
downloaded):

    python scripts/cifar10_race.py --data PATH            # 3 seeds, NAG vs torch SGD, airbench-style net
    python scripts/cifar10_race.py --data PATH --muon     # also Muon (hidden convs) + NAdamW (the rest)

The recipe (printed, and written to OUT/config.json): the airbench-style net of ``nesterov.models`` (width 64,
1.97 M parameters), batch 512, random crop (pad 4) + flip, label smoothing 0.2, one-cycle lr, weight decay 5e-4,
momentum 0.9, bf16 autocast, channels_last, ``torch.compile`` on CUDA; evaluation once per epoch on the 10 000
test images.  Each optimizer runs the same seeds in turn (seed by seed, so a slow spell hits all alike);
time to target counts training and evaluation wall time from the first step (the first compile included, the
same for every optimizer).  Prints the table and the ratio of mean seconds to 94 %: NAG / torch SGD.

On CPU (``--device cpu``) it runs with a tiny budget for testing: ``--epochs 0.5 --width 8 --target 0.3``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of the CIFAR-10 python batches (data_batch_1..5, test_batch)")
    p.add_argument("--device", default="auto", help="auto (cuda if there is one), cuda, cuda:N, cpu")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=float, default=20.0)
    p.add_argument("--width", type=int, default=64, help="airbench base width (64: widths 64, 256, 256)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.2, help="NAG and torch SGD lr (the same for both)")
    p.add_argument("--target", type=float, default=0.94, help="test accuracy to reach (fraction)")
    p.add_argument("--muon", action="store_true", help="race Muon too (lr 0.02 on hidden convs, NAdamW on the rest)")
    p.add_argument("--precision", help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--no-compile", action="store_true", help="do not torch.compile the model (default on CUDA)")
    p.add_argument("--out", help="output folder (default runs/cifar10-race-<time>)")
    args = p.parse_args(argv)

    import torch

    from nesterov.train.compare import compare, format_table
    from nesterov.train.config import Config
    from nesterov.train.loop import resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    base = Config(dataset=f"cifar10:{args.data}", model="airbench", width=args.width, batch_size=args.batch_size,
                  epochs=args.epochs, schedule="one-cycle", warmup=0.2, label_smoothing=0.2, augment="crop-flip",
                  momentum=0.9, weight_decay=5e-4, target_accuracy=args.target, device=str(device),
                  precision=args.precision or ("bf16" if cuda else "fp32"), compile=cuda and not args.no_compile)
    names = ["nag", "torch-sgd"] + (["muon"] if args.muon else [])
    lrs = {"nag": args.lr, "torch-sgd": args.lr, "muon": 0.02}
    out = Path(args.out or f"runs/cifar10-race-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"device {device} ({torch.cuda.get_device_name(device) if cuda else 'CPU'}), torch {torch.__version__}")
    print("recipe " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(base).items() if v is not None))
    result = compare(names, base, args.seeds, lrs=lrs, out=out)
    print(format_table(result["table"]))
    t = {row["optimizer"]: row for row in result["table"]}
    nag, sgd = t["nag"]["seconds_to_target_mean"], t["torch-sgd"]["seconds_to_target_mean"]
    if nag is not None and sgd is not None:
        print(f"time to {100 * args.target:g} %: nag {nag:.2f} s, torch SGD {sgd:.2f} s, ratio nag / torch SGD "
              f"{nag / sgd:.3f} (mean over the seeds that reached it: {t['nag']['reached']}/{args.seeds} and "
              f"{t['torch-sgd']['reached']}/{args.seeds})")
    else:
        print(f"time to {100 * args.target:g} %: not reached by every optimizer "
              f"(nag {t['nag']['reached']}/{args.seeds}, torch SGD {t['torch-sgd']['reached']}/{args.seeds})")
    print(f"wrote {out}/compare.csv, runs.csv, history.csv, compare.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
