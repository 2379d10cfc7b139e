import pytest
import torch
from torch import nn

from nesterov.models import build_model


@pytest.mark.parametrize("name", ["cnn1d", "linear", "mlp"])
@pytest.mark.parametrize("shape", [(40,), (64,)])
def test_models_return_logits(name, shape):
    torch.manual_seed(0)
    m = build_model(name, shape, 10)
    out = m(torch.randn(5, *shape))
    assert out.shape == (5, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_mlp_is_linear_relu_linear_relu_linear():
    m = build_model("mlp", (40,), 10)
    kinds = [type(layer) for layer in m if not isinstance(layer, nn.Flatten)]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]  # logits: no softmax


def test_cnn1d_takes_channels():
    m = build_model("cnn1d", (3, 32), 4)
    assert m(torch.randn(2, 3, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="cnn1d needs inputs"):
        build_model("cnn1d", (2, 3, 4), 4)


def test_unknown_model_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet'; valid: cnn1d, mlp, linear"):
        build_model("resnet", (40,), 10)
