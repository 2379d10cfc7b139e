"""``nesterov bench step`` entries for ScheduleFreeSGD and ScheduleFreeAdamW (``--optimizer sf-sgd | sf-adamw``,
registered in ``nesterov.bench.specs.OPTIMIZERS``).

torch has no schedule-free optimizer: the rows to beat are the fused kernels that move the same bytes (SGD with
momentum: read p, g, b, write p, b; AdamW: read p, g, m, v, write p, m, v — schedule-free reads y, g, z (and v)
and writes y, z (and v)), and the reference package with its foreach step (``--peers``, see
:mod:`nesterov.bench.peers`).
"""

from __future__ import annotations

import torch

from nesterov.bench.specs import BenchSpec

# No warmup: the steady state is timed, and γ_t is then lr from the first step.
SGD_HP = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, warmup_steps=0, r=0.0, weight_lr_power=2.0)
ADAMW_HP = dict(lr=2.5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, warmup_steps=0, r=0.0,
                weight_lr_power=2.0)


def sf_sgd_spec() -> BenchSpec:
    from nesterov import ScheduleFreeSGD

    hp = SGD_HP
    return BenchSpec(
        ours=lambda params, **kw: ScheduleFreeSGD(params, **hp, **kw),
        torch_alternatives={
            "torch SGD fused": lambda ps: torch.optim.SGD(ps, lr=hp["lr"], momentum=hp["momentum"],
                                                          weight_decay=hp["weight_decay"], fused=True),
        },
        bytes_per_param=lambda pb, sb: 3 * pb + 2 * sb,  # read y, g, z; write y, z
        reference="torch SGD fused",
        backends=("eager", "foreach", "compile", "cpp", "auto"),
        extra={"hp": hp},
    )


def sf_adamw_spec() -> BenchSpec:
    from nesterov import ScheduleFreeAdamW

    hp = ADAMW_HP
    return BenchSpec(
        ours=lambda params, **kw: ScheduleFreeAdamW(params, **hp, **kw),
        torch_alternatives={
            "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                                                              weight_decay=hp["weight_decay"], fused=True),
        },
        bytes_per_param=lambda pb, sb: 3 * pb + 4 * sb,  # read y, g, z, v; write y, z, v
        reference="torch AdamW fused",
        backends=("eager", "foreach", "compile", "cpp", "auto"),
        extra={"hp": hp},
    )
