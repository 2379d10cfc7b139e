"""The trainer's Muon family: normuon and muon-polar, --ns / --ns-method, and DDP's group reaching Muon
(the flags' bad values are cases of scripts/cli_bad_inputs.py, checked by tests/test_cli.py)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import nesterov
from nesterov.rules import muon as R
from nesterov.train import optimizers as T

from _dist import on_two_ranks


def test_the_flag_values_are_the_rules():
    assert T.NS_SETS == tuple(R.NS_COEFFICIENT_SETS) and T.NS_METHODS == R.NS_METHODS


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 4))


@pytest.mark.parametrize("name,cls,coefficients", [("muon", "Muon", R.NS_COEFFICIENTS),
                                                   ("normuon", "NorMuon", R.NS_COEFFICIENTS),
                                                   ("muon-polar", "Muon", "polar_express")])
def test_the_muon_family_routes_by_module_and_takes_the_flags(name, cls, coefficients):
    model = _mlp()
    opt, _ = T.make_optimizer(name, model)
    assert type(opt) is getattr(nesterov, cls) and name in T.MUON_FAMILY
    muon = [g for g in opt.param_groups if g["use_muon"]]
    assert [id(p) for g in muon for p in g["params"]] == [id(model[0].weight), id(model[2].weight)]  # not the head
    assert muon[0]["ns_coefficients"] == coefficients and muon[0]["ns_method"] == "auto"
    opt, _ = T.make_optimizer(name, model, **T.muon_options(name, "polar_express", "gram"))
    group = next(g for g in opt.param_groups if g["use_muon"])
    assert group["ns_coefficients"] == "polar_express" and group["ns_method"] == "gram"
    assert opt.process_group is None


def test_muon_options_reach_the_muon_family_only():
    assert T.muon_options("nadamw", "polar_express", "gram", object()) == {}
    assert T.muon_options("muon", None, "auto") == {"ns_method": "auto"}
    T.check_muon_flags(["nag", "normuon"], "polar_express", "gram")  # a race: one of them takes it
    with pytest.raises(T.OptimizerError, match="ns_method: applies to muon, normuon, muon-polar only"):
        T.check_muon_flags(["nag"], None, "gram")


def _group_work(rank: int, world: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from nesterov.train import dist as D

    current = D.current()
    model = DDP(_mlp())
    opt, _ = T.make_optimizer("normuon", model.module, **T.muon_options("normuon", "polar_express", None,
                                                                        current.replica_group(fsdp=False)))
    import copy
    import pickle

    model(torch.randn(4, 8)).square().sum().backward()
    opt.step()
    copies = [copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))]  # a copy steps without the group
    return {"ddp": current.replica_group(fsdp=False) is dist.group.WORLD, "fsdp": current.replica_group(fsdp=True),
            "muon": opt.process_group is dist.group.WORLD,
            "copies": [c.process_group is None and len(c.state) == len(opt.state) for c in copies]}


def test_ddp_hands_its_group_to_muon_and_fsdp_does_not(tmp_path):
    """And Muon with a group deep-copies and pickles: the copy has no group (a group does not pickle)."""
    for r in on_two_ranks(_group_work, tmp_path):
        assert r == {"ddp": True, "fsdp": None, "muon": True, "copies": [True, True]}


def _train(nproc: int, out, *args):
    cmd = [sys.executable, "-m", "nesterov", "train", *args, "--out", str(out)]
    if nproc > 1:
        cmd[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "nesterov"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NESTEROV_DIST_TIMEOUT": "60"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_torchrun_normuon_with_polar_express_on_two_processes_equals_one(tmp_path, monkeypatch):
    monkeypatch.setenv("NESTEROV_CACHE", str(tmp_path / "cache"))
    args = ["--dataset", "digits", "--model", "mlp", "--optimizer", "normuon", "--ns", "polar_express",
            "--ns-method", "gram", "--steps", "12", "--eval-every", "4", "--threads", "1", "--no-progress",
            "--precision", "fp64"]
    one, two = _train(1, tmp_path / "one", *args), _train(2, tmp_path / "two", *args)
    assert [r["step"] for r in one] == [r["step"] for r in two] == [4, 8, 12]
    for key in ("train_loss", "test_loss"):
        assert max(abs(a[key] - b[key]) for a, b in zip(one, two)) <= 1e-10
    assert one[-1]["train_loss"] < one[0]["train_loss"]
