"""The optimizers inside the frameworks people train with: the proof that they are drop-in.

Public API only (``nesterov.NAG`` ... ``nesterov.LAMB``, each a ``torch.optim.Optimizer``), real frameworks, no
mocks, tiny models on CPU:

- Hugging Face Trainer (transformers + accelerate) with a tiny Llama built from a config (no download): each
  optimizer passed through ``optimizer_cls_and_kwargs``, a linear schedule warming up from lr 0, ``max_grad_norm``,
  ``bf16=True`` on CPU, and ``resume_from_checkpoint`` equal to the uninterrupted run; NAG and NAdamW equal to
  torch's SGD(nesterov) and NAdam under the same Trainer in float64.
- Lightning: ``configure_optimizers`` returning our optimizer and a scheduler, ``bf16-mixed`` +
  ``gradient_clip_val``, ``bf16-true`` NAG equal to torch SGD(nesterov) within bf16 rounding, ``ckpt_path`` resume
  equal to the uninterrupted run.
- safetensors ``save_model``/``load_model`` after the optimizer has stepped; ``torch.save`` of a submodule's
  state_dict writes that submodule, not the whole model.
- Casting the model after building the optimizer (``model.double()``, channels_last) works as with torch.optim.
- A short script that steps and ends exits with status 0 (no background work left to abort the interpreter).

Exactness: where two runs do the same arithmetic (an interrupted and an uninterrupted run, an optimizer built
before or after a cast), torch.optim's own optimizers give bit-identical results; each such test runs a
torch.optim control case through the same harness, so a tolerance of 0 there is known to be achievable.
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

import nesterov

NAMES = ("NAG", "NAdamW", "Adan", "Muon", "LARS", "LAMB")

# Hyperparameters that move a tiny model visibly in a few steps (weight decay on, so it is exercised too).
HYPERS = {
    "NAG": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    "NAdamW": dict(lr=0.01, weight_decay=0.01),
    "Adan": dict(lr=0.01, weight_decay=0.01),
    "Muon": dict(lr=0.02, weight_decay=0.01),
    "LARS": dict(lr=1.0, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02),
    "LAMB": dict(lr=0.01, weight_decay=0.01),
}

# torch.optim controls: the same harness run with torch's own optimizers (what a drop-in is measured against).
TORCH = {
    "torch.SGD": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)),
    "torch.NAdam": (torch.optim.NAdam, dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True)),
}


def optimizer(name: str):
    """(class, kwargs) for one of ours or a torch control."""
    if name in TORCH:
        return TORCH[name]
    return getattr(nesterov, name), dict(HYPERS[name])


def build(name: str, params):
    cls, kwargs = optimizer(name)
    return cls(params, **kwargs)


def max_diff(a, b) -> float:
    return max((x.detach().double() - y.detach().double()).abs().max().item() for x, y in zip(a, b))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face Trainer
# ---------------------------------------------------------------------------------------------------------------

VOCAB, SEQ = 32, 8


def tiny_llama(seed: int = 0, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=SEQ,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).to(dtype)


class CountingData(torch.utils.data.Dataset):
    """Sequences that count upwards mod VOCAB from a random start: a learnable next-token task."""

    def __init__(self, n: int = 24):
        gen = torch.Generator().manual_seed(1)
        starts = torch.randint(0, VOCAB, (n, 1), generator=gen)
        self.ids = (starts + torch.arange(SEQ)) % VOCAB

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def hf_loss(model) -> float:
    """The model's loss on the whole data set, in float64 (an independent read-out of the trained weights)."""
    ids = CountingData().ids
    with torch.no_grad():
        return copy.deepcopy(model).double()(input_ids=ids, labels=ids).loss.item()


def hf_args(out, **overrides):
    from transformers import TrainingArguments

    args = dict(output_dir=str(out), max_steps=6, per_device_train_batch_size=4, lr_scheduler_type="linear",
                warmup_steps=3, max_grad_norm=0.5, use_cpu=True, save_strategy="no", logging_steps=1,
                report_to=[], disable_tqdm=True, dataloader_num_workers=0, seed=0, data_seed=0)
    args.update(overrides)
    return TrainingArguments(**args)


def hf_trainer(model, name, args, callbacks=()):
    from transformers import Trainer

    return Trainer(model=model, args=args, train_dataset=CountingData(), optimizer_cls_and_kwargs=optimizer(name),
                   callbacks=list(callbacks))


class StepRecorder:
    """A TrainerCallback that records, per optimizer step, the lr of every group as the step sees it and the
    weights right after it."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Recorder(TrainerCallback):
            def __init__(self):
                self.lrs, self.after = [], []

            def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
                self.lrs.append([float(g["lr"]) for g in optimizer.param_groups])

            def on_step_end(self, args, state, control, model=None, **kwargs):
                self.after.append([p.detach().clone() for p in model.parameters()])

        return _Recorder()


@pytest.mark.parametrize("name", NAMES + ("torch.SGD",))
def test_hf_trainer_bf16_warmup_from_zero_clipping_and_resume(name, tmp_path):
    """A tiny Llama trained by the HF Trainer with bf16 autocast on CPU, a linear warmup from lr 0 and
    ``max_grad_norm``; the optimizer comes from ``optimizer_cls_and_kwargs``, so resuming rebuilds it and loads its
    state. Resuming from the step-3 checkpoint must end on exactly the weights of the uninterrupted run (torch.SGD
    is the control that shows the Trainer resumes bit-exactly)."""
    recorder = StepRecorder()
    model = tiny_llama(seed=0)
    initial = [p.detach().clone() for p in model.parameters()]
    trainer = hf_trainer(model, name, hf_args(tmp_path / "run", bf16=True, save_strategy="steps", save_steps=3),
                         [recorder])
    assert trainer.accelerator.mixed_precision == "bf16"  # the forward and backward run under bf16 autocast
    trainer.train()
    straight = snapshot(model)

    # the schedule warms up from exactly 0: the first step sees lr 0 and changes nothing, later steps train
    assert len(recorder.lrs) == 6
    assert all(lr == 0.0 for lr in recorder.lrs[0]), recorder.lrs[0]
    assert all(lr > 0.0 for lr in recorder.lrs[1]), recorder.lrs[1]
    assert max_diff(recorder.after[0], initial) == 0.0
    assert max_diff(recorder.after[-1], initial) > 1e-4
    # clipping had something to clip (the Trainer logs the norm before clipping)
    norms = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
    assert max(norms) > 0.5, norms

    resumed_model = tiny_llama(seed=1)  # other initial weights: everything must come from the checkpoint
    resumed = hf_trainer(resumed_model, name, hf_args(tmp_path / "resumed", bf16=True))
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    again = snapshot(resumed_model)
    assert straight.keys() == again.keys()
    off = max_diff(straight.values(), again.values())
    assert off == 0.0, f"resumed weights {off:.3g} from the uninterrupted run"
    assert hf_loss(resumed_model) == hf_loss(model)


@pytest.mark.parametrize("ours, theirs", [("NAG", "torch.SGD"), ("NAdamW", "torch.NAdam")])
def test_hf_trainer_equals_torch_optimizer(ours, theirs, tmp_path):
    """Under the same Trainer (warmup from 0, clipping at 0.5, weight decay groups) in float64, NAG ends on
    torch SGD(nesterov)'s weights and NAdamW on torch NAdam(decoupled_weight_decay)'s. Tolerance 1e-10: both
    compute the same update in float64 (rounding 1e-16 per operation) over 6 steps; any difference in how the
    schedule, the clipped gradients or the weight-decay groups are applied is orders of magnitude larger."""
    results = []
    for name in (ours, theirs):
        model = tiny_llama(seed=0, dtype=torch.float64)
        trainer = hf_trainer(model, name, hf_args(tmp_path / name, weight_decay=0.1))
        trainer.train()
        norms = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
        assert max(norms) > 0.5, norms  # clipping acted
        results.append(snapshot(model))
    moved = max_diff(results[1].values(), tiny_llama(seed=0, dtype=torch.float64).state_dict().values())
    assert moved > 1e-3
    off = max_diff(results[0].values(), results[1].values())
    assert off <= 1e-10, f"{ours} ends {off:.3g} from {theirs}"


# ---------------------------------------------------------------------------------------------------------------
# Lightning
# ---------------------------------------------------------------------------------------------------------------

def mlp(seed: int, width: int = 256) -> torch.nn.Sequential:
    """An MLP whose middle weight has width² = 65 536 elements (the size where engines switch kernels)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                               torch.nn.Tanh(), torch.nn.Linear(width, 4))


def lit_data(n: int = 48, batch: int = 16):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n, 16, generator=gen)
    y = (x[:, :4].argmax(1) + (x[:, 4] > 0).long()) % 4  # learnable labels
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=False,
                                       num_workers=0)


def lit_module(name: str, seed: int = 0, width: int = 256):
    import lightning as L

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp(seed, width)
            self.losses, self.raw_norms, self.clipped_norms = [], [], []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.losses.append(loss.detach().double().item())
            return loss

        def configure_optimizers(self):
            opt = build(name, self.parameters())
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + 0.1 * step))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            self.raw_norms.append(torch.nn.utils.get_total_norm(grads).item())
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            self.clipped_norms.append(torch.nn.utils.get_total_norm(grads).item())

    return Lit()


def lit_trainer(root, **overrides):
    import lightning as L

    kwargs = dict(accelerator="cpu", devices=1, max_steps=6, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                  default_root_dir=str(root))
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def quiet_fit(trainer, module, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        trainer.fit(module, lit_data(), **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_lightning_bf16_mixed_with_gradient_clipping(name, tmp_path):
    """``precision="bf16-mixed"`` + ``gradient_clip_val``: Lightning clips the gradients before our step (it
    refuses optimizers that unscale gradients themselves, which bf16 autocast never needs), the scheduler from
    ``configure_optimizers`` runs, and the model trains."""
    module = lit_module(name, width=32)
    initial = [p.detach().clone() for p in module.parameters()]
    trainer = lit_trainer(tmp_path, precision="bf16-mixed", gradient_clip_val=0.5)
    quiet_fit(trainer, module)
    assert trainer.global_step == 6
    assert max(module.raw_norms) > 0.5, module.raw_norms  # clipping had work to do
    assert all(n <= 0.5 * (1 + 1e-5) for n in module.clipped_norms), module.clipped_norms
    opt = trainer.optimizers[0]
    assert opt.param_groups[0]["lr"] == pytest.approx(HYPERS[name]["lr"] / 1.6)  # LambdaLR stepped 6 times
    assert max_diff(module.parameters(), initial) > 1e-4
    assert all(torch.isfinite(torch.tensor(module.losses)))


def test_lightning_bf16_true_nag_equals_torch_sgd(tmp_path):
    """``precision="bf16-true"`` (every parameter, gradient and momentum in bf16): NAG ends where torch
    SGD(nesterov=True) ends, within bf16 rounding.

    Tolerances: bf16 keeps 8 significant bits, a relative rounding of up to 2^-8 ≈ 0.4 % per operation. Two
    correct implementations may round the momentum and the parameter at different points (one rounding of an
    fp32 computation against torch's three bf16 operations), so each weight can differ by a few bf16 ulps per
    step, and those differences feed back through the gradients. Measured on this model and data (12 steps):
    torch's foreach SGD, and a nesterov SGD that computes in fp32 and rounds once, end within 0.3 % of the initial
    loss of torch's for-loop SGD, and each weight tensor within 2.7 % of how far torch moved it (norms). We allow
    2 % and 10 %; the defect this catches (a ≥ 65 536-element tensor left unchanged) ends 15 % of the initial loss
    away (0.73 against 0.52) with a tensor 100 % off."""
    runs = {}
    for name in ("NAG", "torch.SGD"):
        module = lit_module(name, seed=0)
        quiet_fit(lit_trainer(tmp_path / name, precision="bf16-true", max_steps=12), module)
        assert all(p.dtype == torch.bfloat16 for p in module.parameters())
        runs[name] = module
    ours, torchs = runs["NAG"], runs["torch.SGD"]
    assert torchs.losses[-1] < 0.7 * torchs.losses[0], torchs.losses  # the run trains: the comparison means something
    assert abs(ours.losses[-1] - torchs.losses[-1]) <= 0.02 * torchs.losses[0], \
        f"final loss {ours.losses[-1]:.4f} against torch SGD's {torchs.losses[-1]:.4f} (from {torchs.losses[0]:.4f})"
    initial = mlp(0).to(torch.bfloat16)
    for (key, p), q, p0 in zip(ours.net.named_parameters(), torchs.net.parameters(), initial.parameters()):
        moved = (q.double() - p0.double()).norm().item()
        off = (p.double() - q.double()).norm().item()
        assert off <= 0.1 * moved, f"{key}: {off:.3g} from torch SGD's weights, which moved {moved:.3g}"


@pytest.mark.parametrize("name", NAMES + ("torch.SGD",))
def test_lightning_ckpt_path_resume_equals_uninterrupted(name, tmp_path):
    """Lightning's ModelCheckpoint at the end of epoch 1 (3 steps), then ``fit(ckpt_path=...)`` of a fresh module
    (other initial weights) to the end of epoch 2: the same final weights as the uninterrupted run, bit for bit
    (optimizer state and scheduler come from the checkpoint; torch.SGD is the control)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    straight = lit_module(name, seed=0, width=32)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_epochs=1, save_top_k=-1,
                           save_on_train_epoch_end=True)
    quiet_fit(lit_trainer(tmp_path / "a", max_steps=-1, max_epochs=2, enable_checkpointing=True, callbacks=[ckpt]),
              straight)
    first = os.path.join(tmp_path, "ckpt", "epoch=0-step=3.ckpt")
    assert os.path.exists(first), os.listdir(tmp_path / "ckpt")

    resumed = lit_module(name, seed=1, width=32)
    quiet_fit(lit_trainer(tmp_path / "b", max_steps=-1, max_epochs=2), resumed, ckpt_path=first)
    assert resumed.losses == straight.losses[3:], (resumed.losses, straight.losses[3:])
    off = max_diff(resumed.parameters(), straight.parameters())
    assert off == 0.0, f"resumed weights {off:.3g} from the uninterrupted run"


# ---------------------------------------------------------------------------------------------------------------
# safetensors and torch.save
# ---------------------------------------------------------------------------------------------------------------

def train_steps(model, opt, steps: int = 2, dtype=torch.float32, seed: int = 3, memory_format=None):
    gen = torch.Generator().manual_seed(seed)
    conv = isinstance(model[0], torch.nn.Conv2d)
    for _ in range(steps):
        x = torch.randn((8, 3, 6, 6) if conv else (8, 16), generator=gen).to(dtype)
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
        y = torch.randint(0, 4, (8,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_save_model_after_steps_round_trips(name, tmp_path):
    """``safetensors.torch.save_model`` accepts the model after the optimizer has been built and has stepped
    (it refuses tensors that share storage), ``load_model`` restores it exactly, and training goes on."""
    from safetensors.torch import load_model, save_model

    model = mlp(0, width=32)
    opt = build(name, model.parameters())
    train_steps(model, opt)
    path = str(tmp_path / "model.safetensors")
    save_model(model, path)
    other = mlp(1, width=32)
    missing, unexpected = load_model(other, path)
    assert not missing and not unexpected
    assert max_diff(other.state_dict().values(), model.state_dict().values()) == 0.0
    before = snapshot(model)
    train_steps(model, opt, steps=1)
    assert max_diff(before.values(), model.state_dict().values()) > 0.0


@pytest.mark.parametrize("name", NAMES)
def test_torch_save_of_a_submodule_writes_only_that_submodule(name, tmp_path):
    """``torch.save(model[k].state_dict())`` after an optimizer over the whole model writes about the bytes of
    that submodule: at most 4 KiB more than saving copies of its tensors (pickle framing), whereas a submodule
    whose tensors are views into a model-wide buffer would write the whole buffer (here ≥ 1 MiB)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 512), torch.nn.Tanh(), torch.nn.Linear(512, 512),
                                torch.nn.Tanh(), torch.nn.Linear(512, 4))
    opt = build(name, model.parameters())
    train_steps(model, opt, steps=1)
    head = model[4]
    torch.save(head.state_dict(), tmp_path / "head.pt")
    torch.save({k: v.clone() for k, v in head.state_dict().items()}, tmp_path / "copies.pt")
    size, copies = os.path.getsize(tmp_path / "head.pt"), os.path.getsize(tmp_path / "copies.pt")
    assert size <= copies + 4096, f"the head's state_dict wrote {size} bytes; copies of its tensors {copies}"
    loaded = torch.load(tmp_path / "head.pt")
    assert max_diff(loaded.values(), head.state_dict().values()) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Casting the model after building the optimizer
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES + ("torch.SGD",))
def test_model_double_after_building_the_optimizer(name):
    """Build the optimizer on a float32 model, then ``model.double()`` and train: the parameters stay the same
    Parameter objects (now float64), and three steps equal those of an optimizer built after the cast. Both runs
    do the same float64 arithmetic; 1e-12 leaves room only for a different summation order (1e-16 per op)."""
    late_model = mlp(0, width=32).double()
    late = build(name, late_model.parameters())
    train_steps(late_model, late, steps=3, dtype=torch.float64)

    model = mlp(0, width=32)
    params = list(model.parameters())
    opt = build(name, model.parameters())
    model.double()
    train_steps(model, opt, steps=3, dtype=torch.float64)
    assert all(p is q and p.dtype == torch.float64 for p, q in zip(model.parameters(), params))
    assert max_diff(model.parameters(), mlp(0, width=32).double().parameters()) > 1e-4
    off = max_diff(model.parameters(), late_model.parameters())
    assert off <= 1e-12, f"{off:.3g} from an optimizer built after the cast"


def conv_net(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(8, 4)).double()


@pytest.mark.parametrize("name", NAMES + ("torch.SGD",))
def test_channels_last_after_building_the_optimizer(name):
    """Build the optimizer, then ``model.to(memory_format=torch.channels_last)`` and train (float64): the conv
    kernels stay channels_last through the steps and the result equals an optimizer built after the conversion
    (1e-12: the same float64 arithmetic up to summation order)."""
    cl = torch.channels_last
    late_model = conv_net().to(memory_format=cl)
    late = build(name, late_model.parameters())
    train_steps(late_model, late, steps=3, dtype=torch.float64, memory_format=cl)

    model = conv_net()
    opt = build(name, model.parameters())
    model.to(memory_format=cl)
    train_steps(model, opt, steps=3, dtype=torch.float64, memory_format=cl)
    for m in (model[0], model[2]):
        assert m.weight.is_contiguous(memory_format=cl) and not m.weight.is_contiguous()
    assert max_diff(model.parameters(), conv_net().parameters()) > 1e-4
    off = max_diff(model.parameters(), late_model.parameters())
    assert off <= 1e-12, f"{off:.3g} from an optimizer built after the conversion"


# ---------------------------------------------------------------------------------------------------------------
# A training script's process
# ---------------------------------------------------------------------------------------------------------------

SHORT_SCRIPT = """
import torch, nesterov
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Tanh(), torch.nn.Linear(512, 4))
for cls in (nesterov.NAG, nesterov.NAdamW, nesterov.Adan, nesterov.LAMB):
    opt = cls(model.parameters(), lr=1e-3)
    opt.zero_grad()
    model(torch.randn(8, 512)).square().mean().backward()
    opt.step()
print("stepped", flush=True)
"""


def test_a_short_script_exits_cleanly_right_after_stepping(tmp_path):
    """A script that steps once (a 2^18-element weight) and ends: the interpreter exits with status 0, as with
    torch.optim. An optimizer that is still doing work in a background thread when the interpreter shuts down
    (compiling its kernel, here with an empty compile cache) must not abort the process ("terminate called
    without an active exception", status 134), which would also fail a test run that passed. Where that happens
    depends on what the thread is doing at exit: on the engine of f047dcd this script aborted in 4 of 4 direct
    runs and about half of the runs under pytest, so a pass here is evidence, not proof."""
    import subprocess
    import sys

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = subprocess.run([sys.executable, "-c", SHORT_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert "stepped" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr.strip()[-300:]}"
