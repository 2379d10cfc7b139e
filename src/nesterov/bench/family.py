"""``nesterov bench step`` entries for NAdamW, Adan, LARS and LAMB (registered in ``nesterov.bench.specs.OPTIMIZERS``).

Floors count the bytes an ideal step must move per element (pb: parameter/gradient bytes, sb: state bytes).
LARS and LAMB need every tensor's norm before any element can be updated, so their ideal step is two
passes: the norms, then the update.
"""

from __future__ import annotations

import torch

from nesterov.bench.specs import BenchSpec, compiled_step


def nadamw_spec() -> BenchSpec:
    from nesterov import NAdamW

    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    nadam = torch.optim.NAdam
    return BenchSpec(
        ours=lambda params, **kw: NAdamW(params, **hp, **kw),
        torch_alternatives={
            "torch NAdam for-loop": lambda ps: nadam(ps, **hp, decoupled_weight_decay=True, foreach=False),
            "torch NAdam foreach": lambda ps: nadam(ps, **hp, decoupled_weight_decay=True, foreach=True),
            "torch NAdam compiled": lambda ps: compiled_step(nadam(ps, **hp, decoupled_weight_decay=True,
                                                                    foreach=True)),
            "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, **hp, fused=True),  # same bytes, no μ
        },
        bytes_per_param=lambda pb, sb: 3 * pb + 4 * sb,  # read p, g, m, v; write p, m, v
        reference="torch AdamW fused",
        extra={"hp": hp},
    )


def adan_spec() -> BenchSpec:
    from nesterov import Adan

    hp = dict(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=2e-2)
    return BenchSpec(
        ours=lambda params, **kw: Adan(params, **hp, **kw),
        torch_alternatives={  # torch has no Adan: AdamW fused is the nearest thing a user would pick
            "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=2e-2, fused=True),
        },
        bytes_per_param=lambda pb, sb: 3 * pb + 8 * sb,  # read p, g, m, n, d, g_prev; write p, m, n, d, g_prev
        reference="torch AdamW fused",
        extra={"hp": hp},
    )


def lars_spec() -> BenchSpec:
    from nesterov import LARS

    hp = dict(lr=1.0, momentum=0.9, weight_decay=1e-4, trust_coefficient=1e-3)
    return BenchSpec(
        ours=lambda params, **kw: LARS(params, **hp, **kw),
        torch_alternatives={  # torch has no LARS: Nesterov SGD fused, the same step without trust ratios
            "torch SGD fused": lambda ps: torch.optim.SGD(ps, lr=hp["lr"], momentum=hp["momentum"],
                                                          weight_decay=hp["weight_decay"], nesterov=True, fused=True),
        },
        # Read p, g, b; write p, b. The norms read p and g once more, from cache in an ideal kernel (the cpp
        # backend's: each thread steps the slice it has just summed).
        bytes_per_param=lambda pb, sb: 3 * pb + 2 * sb,
        reference="torch SGD fused",
        backends=("eager", "foreach", "compile", "cpp", "auto"),
        extra={"hp": hp},
    )


def lamb_spec() -> BenchSpec:
    from nesterov import LAMB

    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=1e-2)
    return BenchSpec(
        ours=lambda params, **kw: LAMB(params, **hp, **kw),
        torch_alternatives={  # torch has no LAMB: AdamW fused, the same moments without trust ratios
            "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, eps=1e-6, weight_decay=1e-2, fused=True),
        },
        # Read p, g, m, v; write p, m, v. The step after the norms reads p, m, v once more, from cache in an
        # ideal kernel (the cpp backend's: each thread steps the slice it has just summed).
        bytes_per_param=lambda pb, sb: 3 * pb + 4 * sb,
        reference="torch AdamW fused",
        backends=("eager", "foreach", "compile", "cpp", "auto"),
        extra={"hp": hp},
    )
