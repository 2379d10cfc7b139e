"""Routing by module type (nesterov.muon_routes / muon_param_groups) and Muon's name-part matching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nesterov
from nesterov.models import build_model
from nesterov.optim.muon import aux_by_name


def routed(model) -> dict[str, str]:
    return {r.name: r.route for r in nesterov.muon_routes(model)}


def orthogonalised(model) -> set[str]:
    return {name for name, route in routed(model).items() if route == "newton-schulz"}


def muon_sets(opt) -> tuple[set[int], set[int]]:
    muon = {id(p) for g in opt.param_groups if g["use_muon"] for p in g["params"]}
    aux = {id(p) for g in opt.param_groups if not g["use_muon"] for p in g["params"]}
    return muon, aux


def check_groups(model, **overrides):
    """The groups hold every trainable parameter once, and Muon keeps them as routed."""
    routes = nesterov.muon_routes(model)
    groups = nesterov.muon_param_groups(model, **overrides)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    opt = nesterov.Muon(groups)
    muon, aux = muon_sets(opt)
    assert muon == {id(p) for p in routes.params("newton-schulz")}
    assert aux == {id(p) for p in routes.params("aux")}
    return opt


def test_the_issues_sequential_orthogonalises_only_its_hidden_linear():
    model = nn.Sequential(nn.Embedding(100, 32), nn.Linear(32, 64), nn.LayerNorm(64), nn.Linear(64, 100))
    assert orthogonalised(model) == {"1.weight"}
    check_groups(model)
    # Muon given the bare parameters sees only shapes: the embedding and the head go to Newton–Schulz
    muon, _ = muon_sets(nesterov.Muon(model.parameters()))
    assert {id(model[0].weight), id(model[3].weight)} <= muon


def test_transformer_decoder_layer_attention_goes_to_newton_schulz():
    layer = nn.TransformerDecoderLayer(16, 2, 32)
    assert orthogonalised(layer) == {"self_attn.in_proj_weight", "self_attn.out_proj.weight",
                                     "multihead_attn.in_proj_weight", "multihead_attn.out_proj.weight",
                                     "linear1.weight"}  # linear2 is the last Linear: the head
    check_groups(layer)
    separate = nn.MultiheadAttention(16, 2, kdim=8, vdim=12)  # q/k/v projections as three parameters
    assert orthogonalised(separate) == {"q_proj_weight", "k_proj_weight", "v_proj_weight"}  # out_proj: the last Linear


def test_tied_gpt_head_is_routed_once_to_the_aux_rule():
    model = build_model("gpt", None, 256, width=32, depth=2, heads=4, context=16)
    routes = nesterov.muon_routes(model)
    tok = next(r for r in routes if r.param is model.tok.weight)
    assert tok.route == "aux" and tok.aliases == ("head.weight",)
    assert "head.weight" not in {r.name for r in routes}
    assert orthogonalised(model) == {f"blocks.{b}.{n}.weight" for b in range(2) for n in ("qkv", "proj", "fc", "out")}
    check_groups(model)

    class TiedNotLast(nn.Module):  # a head tied to the embedding, followed by another Linear
        def __init__(self):
            super().__init__()
            self.emb, self.hidden, self.out_head, self.probe = (nn.Embedding(10, 8), nn.Linear(8, 8),
                                                                nn.Linear(8, 10), nn.Linear(10, 3))
            self.out_head.weight = self.emb.weight

    r = routed(TiedNotLast())
    assert r == {"emb.weight": "aux", "hidden.weight": "newton-schulz", "hidden.bias": "aux",
                 "out_head.bias": "aux", "probe.weight": "aux", "probe.bias": "aux"}


def test_conv_nets():
    model = build_model("airbench", (3, 8, 8), 10, width=8)
    routes = nesterov.muon_routes(model)
    convs = {r.name for r in routes if r.param.dim() == 4}
    assert convs and orthogonalised(model) == convs
    assert routed(model)["head.weight"] == "aux"
    check_groups(model)
    net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ConvTranspose2d(4, 4, 2), nn.Conv2d(4, 1, 3), nn.Flatten(),
                        nn.Linear(9, 5), nn.Linear(5, 2))
    assert routed(net) == {"0.weight": "newton-schulz", "0.bias": "aux", "1.weight": "newton-schulz", "1.bias": "aux",
                           "2.weight": "aux", "2.bias": "aux",  # one output channel: a single row, as Muon says
                           "4.weight": "newton-schulz", "4.bias": "aux", "5.weight": "aux", "5.bias": "aux"}
    check_groups(net)


def test_other_parameters_follow_muons_shape_and_name_rules_and_frozen_ones_are_left_out():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = nn.Parameter(torch.randn(6, 6))
            self.pos_embed = nn.Parameter(torch.randn(4, 6))
            self.cls_token = nn.Parameter(torch.randn(1, 1, 6))
            self.frozen = nn.Linear(6, 6)
            self.frozen.requires_grad_(False)
            self.fc = nn.Linear(6, 2)

    model = Custom()
    assert routed(model) == {"mix": "newton-schulz", "pos_embed": "aux", "cls_token": "aux", "frozen.weight": "frozen",
                             "frozen.bias": "frozen", "fc.weight": "aux", "fc.bias": "aux"}
    check_groups(model)


def test_overrides_reach_their_groups():
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    groups = nesterov.muon_param_groups(model, lr=0.05, weight_decay=0.1, aux_lr=3e-4, aux_betas=(0.8, 0.99))
    assert [(g["use_muon"], g.get("lr"), g.get("weight_decay"), g.get("betas")) for g in groups] == [
        (True, 0.05, 0.1, None), (False, 3e-4, None, (0.8, 0.99))]
    opt = nesterov.Muon(groups)
    assert opt.param_groups[1]["betas"] == (0.8, 0.99) and opt.param_groups[1]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match=r"overrides \['aux_params'\]: muon_param_groups sets params and use_muon"):
        nesterov.muon_param_groups(model, aux_params=[])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got list"):
        nesterov.muon_routes([nn.Parameter(torch.ones(2, 2))])
    only_vectors = nesterov.muon_param_groups(nn.LayerNorm(4))
    assert [g["use_muon"] for g in only_vectors] == [False]


def test_the_table_names_shape_route_and_why():
    model = nn.Sequential(nn.Embedding(100, 32), nn.Linear(32, 64), nn.LayerNorm(64), nn.Linear(64, 100))
    lines = str(nesterov.muon_routes(model)).splitlines()
    assert lines[0].split() == ["name", "shape", "route", "why"]
    assert lines[1].split() == ["0.weight", "100×32", "aux", "Embedding", "table"]
    assert lines[2].split()[:3] == ["1.weight", "64×32", "newton-schulz"]
    assert lines[-1] == "1 of 7 tensors orthogonalised (2,048 of 11,940 values)"
    assert repr(nesterov.muon_routes(model)) == "MuonRoutes(7 parameters, 1 to Newton–Schulz)"


def test_named_parameters_match_name_parts_not_substrings():
    """Issue 19: `head` as a substring sent the cross-attention of nn.TransformerDecoderLayer to NAdamW."""
    layer = nn.TransformerDecoderLayer(16, 2, 32)
    opt = nesterov.Muon(layer.named_parameters())
    muon = {n for g in opt.param_groups if g["use_muon"] for n in g["param_names"]}
    assert {"multihead_attn.in_proj_weight", "multihead_attn.out_proj.weight", "self_attn.in_proj_weight"} <= muon
    for name in ("lm_head.weight", "head.weight", "model.embed_tokens.weight", "tok_embeddings.weight",
                 "transformer.wte.weight", "wpe.weight", "pos_embed", "heads.0.weight", "classifier.weight",
                 "unembed.W_U", "gpt_neox.embed_out.weight", "Embedding.Weight"):
        assert aux_by_name(name), name
    for name in ("multihead_attn.in_proj_weight", "decoder.multihead_attn.out_proj.weight", "blocks.0.attn.qkv",
                 "overhead.weight", "ahead_proj.weight", "mlp.c_fc.weight"):
        assert not aux_by_name(name), name
