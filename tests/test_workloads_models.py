"""ResNet-18, the airbench-style net and the GPT: shapes, options, tied embeddings, causality, param roles."""

import pytest
import torch
from torch import nn

from nesterov import muon_routes
from nesterov.models import build_model
from nesterov.train.optimizers import make_optimizer


@pytest.mark.parametrize("name,width", [("resnet18", 8), ("airbench", 8)])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8)])
def test_convnets_return_logits_and_train(name, width, shape):
    torch.manual_seed(0)
    m = build_model(name, shape, 10, width=width)
    out = m(torch.randn(4, *shape))
    assert out.shape == (4, 10)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_resnet18_is_the_cifar_resnet18():
    m = build_model("resnet18", (3, 32, 32), 10)
    assert sum(p.numel() for p in m.parameters()) == 11_173_962  # the CIFAR ResNet-18 everyone quotes (11.17 M)
    assert sum(isinstance(x, nn.Conv2d) for x in m.modules()) == 20


def test_gpt_is_causal_with_tied_embeddings():
    torch.manual_seed(0)
    m = build_model("gpt", None, 256, width=32, depth=2, heads=4, context=16)
    assert m.head.weight is m.tok.weight
    x = torch.randint(0, 256, (2, 16))
    y = m(x)
    assert y.shape == (2, 16, 256)
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 1) % 256  # changing the future leaves the past unchanged
    y2 = m(x2)
    assert torch.allclose(y[:, :10], y2[:, :10], atol=1e-6) and not torch.allclose(y[:, 10:], y2[:, 10:])
    with pytest.raises(ValueError, match="longer than the context"):
        m(torch.randint(0, 256, (1, 17)))
    with pytest.raises(ValueError, match="width .30. must be a multiple of heads .4."):
        build_model("gpt", None, 256, width=30, heads=4)
    with pytest.raises(ValueError, match="option.s. depth do not apply .valid: width."):
        build_model("airbench", (3, 8, 8), 10, depth=3)


def test_weight_decay_groups():
    m = build_model("gpt", None, 256, width=32, depth=2, heads=4, context=16)
    opt, _ = make_optimizer("torch-adamw", m, weight_decay=0.1)
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(wd) == sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters()))  # tied once
    assert all(wd[id(p)] == (0.1 if p.ndim >= 2 else 0.0) for p in m.parameters())


def test_muon_groups_send_embeddings_head_and_vectors_to_the_aux_rule():
    for m in (build_model("gpt", None, 256, width=32, depth=2, heads=4, context=16),
              build_model("airbench", (3, 8, 8), 10, width=8)):
        routes = muon_routes(m)
        opt, _ = make_optimizer("muon", m)
        muon = {id(p) for g in opt.param_groups if g.get("use_muon", True) for p in g["params"]}
        aux = {id(p) for g in opt.param_groups if g.get("use_muon", True) is False for p in g["params"]}
        assert muon == {id(p) for p in routes.params("newton-schulz")}
        assert aux == {id(p) for p in routes.params("aux")}
        assert all(p.ndim >= 2 for p in routes.params("newton-schulz"))
        head = getattr(m, "head")
        assert id(head.weight) in aux and all(id(p) in aux for p in m.parameters() if p.ndim < 2)
        assert all(g["lr"] == 3e-3 and g["weight_decay"] == 0.0 for g in opt.param_groups if not g["use_muon"])
