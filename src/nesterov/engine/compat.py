"""Every private torch symbol nesterov uses, in one place (``tests/test_compat.py`` checks each exists).

torch does not promise these across releases; when one moves, this module is the only one to change.
"""

from __future__ import annotations

import torch

# torch's fused SGD kernel (what ``torch.optim.SGD(fused=True)`` calls): in place over lists.
fused_sgd_ = torch._fused_sgd_

# Run a function eagerly even inside a torch.compile'd region (one graph break at the call).
disable_dynamo = torch._disable_dynamo

# Shape-symbol allocation: with duck shaping off, two tensors of equal length get separate symbols, so a
# compiled multi-tensor step never guards on (and never recompiles for) which lengths happen to be equal.
from torch.fx.experimental import _config as fx_config  # noqa: E402


def no_duck_shapes():
    return fx_config.patch(use_duck_shape=False)


SYMBOLS = {
    "torch._fused_sgd_": fused_sgd_,
    "torch._disable_dynamo": disable_dynamo,
    "torch.fx.experimental._config.use_duck_shape": getattr(fx_config, "use_duck_shape"),
}
