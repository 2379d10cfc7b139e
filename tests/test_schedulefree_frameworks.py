"""Schedule-free optimizers inside the real frameworks: HF Trainer and Lightning, on CPU, against the reference.

The reference is the ``schedulefree`` package (1.4.1, the parity target of ``nesterov.ScheduleFreeSGD`` /
``ScheduleFreeAdamW``).  Both run under the same framework in float64, so what differs is only how each computes
the same update: rounding of ~1e-16 per operation, growing through a dozen steps of a tiny model.  A defect
(a missed switch to x, the wrong averaging weight, warmup or decay applied at the wrong point) moves losses and
weights by 1e-4 or more.  Tolerance: 1e-12 relative, the float64 parity bar of the optimizers themselves
(measured here: 0 for every loss, at most 2.1e-16 for the weights).

- HF Trainer calls ``optimizer.train()`` before each training step and ``optimizer.eval()`` before evaluating
  (``transformers/trainer.py``): ours gives the reference's train and eval losses and weights there, and
  ``resume_from_checkpoint`` ends on the uninterrupted run's weights bit for bit, from a checkpoint written in
  train mode and from one written right after an evaluation (eval mode, parameters at x).
- Lightning: :class:`nesterov.integrations.lightning.ScheduleFreeCallback` validates at x (the reference's
  eval-mode loss; without the callback Lightning would validate at y), checkpoints hold x (also one written
  mid-epoch while training), and ``fit(ckpt_path=...)`` resumes bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import nesterov

schedulefree = pytest.importorskip("schedulefree")
try:
    OURS = {"sgd": nesterov.ScheduleFreeSGD, "adamw": nesterov.ScheduleFreeAdamW}
except AttributeError:  # the optimizers land on their own branch
    pytest.skip("nesterov.ScheduleFreeSGD / ScheduleFreeAdamW not importable", allow_module_level=True)

REFERENCE = {"sgd": schedulefree.SGDScheduleFree, "adamw": schedulefree.AdamWScheduleFree}
# Hyperparameters that move a tiny model visibly in a few steps, warmup and weight decay on (exercised too).
HYPERS = {"sgd": dict(lr=0.5, momentum=0.9, weight_decay=0.01, warmup_steps=2),
          "adamw": dict(lr=0.02, betas=(0.9, 0.999), weight_decay=0.01, warmup_steps=2)}
RTOL = 1e-12


def close(a: float, b: float) -> bool:
    return abs(a - b) <= RTOL * max(abs(a), abs(b))


def max_rel(a, b) -> float:
    """Largest difference between matching tensors, relative to the largest entry of the reference's."""
    return max(((x.double() - y.double()).abs().max() / y.double().abs().max().clamp_min(1e-300)).item()
               for x, y in zip(a, b))


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face Trainer
# ---------------------------------------------------------------------------------------------------------------

VOCAB, SEQ = 32, 8


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=SEQ,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).double()


class Counting(torch.utils.data.Dataset):
    """Sequences counting upwards mod VOCAB from a random start: a learnable next-token task."""

    def __init__(self, n: int = 24, seed: int = 1):
        starts = torch.randint(0, VOCAB, (n, 1), generator=torch.Generator().manual_seed(seed))
        self.ids = (starts + torch.arange(SEQ)) % VOCAB

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def hf_trainer(model, cls, kind, out, **overrides):
    from transformers import Trainer, TrainingArguments

    kwargs = {k: v for k, v in HYPERS[kind].items() if k != "weight_decay"}  # the Trainer's groups carry decay
    args = dict(output_dir=str(out), max_steps=6, per_device_train_batch_size=4, lr_scheduler_type="constant",
                weight_decay=HYPERS[kind]["weight_decay"], eval_strategy="steps", eval_steps=2,
                per_device_eval_batch_size=8, use_cpu=True, save_strategy="no", logging_steps=1, report_to=[],
                disable_tqdm=True, dataloader_num_workers=0, seed=0, data_seed=0)
    args.update(overrides)

    class Recording(Trainer):
        """Records every loss it computes, in float64 (the Trainer's log sums training losses in float32)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            (self.train_losses if model.training else self.eval_losses).append(
                (out[0] if return_outputs else out).item())
            return out

    trainer = Recording(model=model, args=TrainingArguments(**args), train_dataset=Counting(),
                        eval_dataset=Counting(8, seed=2), optimizer_cls_and_kwargs=(cls, kwargs))
    trainer.train_losses, trainer.eval_losses = [], []  # one batch per evaluation
    return trainer


def losses(trainer) -> tuple[list[float], list[float]]:
    return trainer.train_losses, trainer.eval_losses


def test_hf_trainer_switches_modes_around_steps_and_evaluations():
    """What the rest relies on, read from the installed transformers: the Trainer calls the optimizer's
    ``train()`` in its training step and ``eval()`` in its evaluation loop."""
    import inspect

    from transformers import Trainer

    assert "self.optimizer.train()" in inspect.getsource(Trainer.training_step)
    assert "self.optimizer.eval()" in inspect.getsource(Trainer.evaluation_loop)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_hf_trainer_losses_and_weights_equal_the_reference(kind, tmp_path):
    """6 steps, an evaluation every 2 (each at x, then back to y): the same training and evaluation losses and
    final weights as schedulefree's optimizer under the same Trainer."""
    runs = {}
    for who, cls in (("ours", OURS[kind]), ("reference", REFERENCE[kind])):
        model = tiny_llama()
        trainer = hf_trainer(model, cls, kind, tmp_path / who)
        trainer.train()
        runs[who] = (losses(trainer), model)
    (train_a, eval_a), ours = runs["ours"]
    (train_b, eval_b), ref = runs["reference"]
    assert len(train_a) == 6 and len(eval_a) == 3
    assert eval_b[-1] < 0.9 * eval_b[0], eval_b  # the run trains: the comparison means something
    assert all(close(a, b) for a, b in zip(train_a + eval_a, train_b + eval_b)), (train_a, eval_a, train_b, eval_b)
    assert max_rel(ours.parameters(), ref.parameters()) <= RTOL


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_hf_trainer_resume_from_checkpoint_is_exact(kind, tmp_path):
    """A checkpoint every step; resuming from step 3 (written in train mode, at y) and from step 4 (written right
    after an evaluation, in eval mode, at x) ends on exactly the uninterrupted run's weights and losses."""
    model = tiny_llama()
    trainer = hf_trainer(model, OURS[kind], kind, tmp_path / "run", save_strategy="steps", save_steps=1)
    trainer.train()
    straight, (train_straight, eval_straight) = snapshot(model), losses(trainer)
    for step in (3, 4):
        again = tiny_llama(seed=1)  # other initial weights: everything must come from the checkpoint
        resumed = hf_trainer(again, OURS[kind], kind, tmp_path / f"from-{step}")
        resumed.train(resume_from_checkpoint=str(tmp_path / "run" / f"checkpoint-{step}"))
        after = snapshot(again)
        assert after.keys() == straight.keys()
        assert all(torch.equal(after[k], straight[k]) for k in after), f"resumed from step {step}"
        train_resumed, eval_resumed = losses(resumed)
        assert train_resumed == train_straight[step:] and eval_resumed == eval_straight[step // 2:]


# ---------------------------------------------------------------------------------------------------------------
# Lightning
# ---------------------------------------------------------------------------------------------------------------

def lit_data(n: int, seed: int, batch: int = 8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=gen, dtype=torch.float64)
    y = x[:, :4].argmax(1)  # learnable labels
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=False,
                                       num_workers=0)


def lit_module(cls, kind: str, seed: int = 0):
    import lightning as L

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(seed)
            self.net = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).double()
            self.train_losses, self.val_losses = [], []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.train_losses.append(loss.item())
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.val_losses.append(F.cross_entropy(self.net(x), y).item())

        def configure_optimizers(self):
            return cls(self.parameters(), **HYPERS[kind])

    return Lit()


def lit_fit(module, root, callbacks=(), val=True, ckpt_path=None, **overrides):
    import lightning as L

    kwargs = dict(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                  default_root_dir=str(root), callbacks=list(callbacks))
    kwargs.update(overrides)
    trainer = L.Trainer(**kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        trainer.fit(module, lit_data(32, 2), lit_data(16, 3, batch=16) if val else None, ckpt_path=ckpt_path)
    return trainer


def callback():
    from nesterov.integrations.lightning import ScheduleFreeCallback

    return ScheduleFreeCallback()


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_lightning_callback_validates_at_x_as_the_reference(kind, tmp_path):
    """Two epochs of 4 steps, validation (one batch) after each: with the callback, ours and the reference give the same
    training and validation losses, and the model left after fit is x (both end in eval mode). Without the
    callback Lightning validates our optimizer at y: other losses."""
    ours, ref = lit_module(OURS[kind], kind), lit_module(REFERENCE[kind], kind)
    lit_fit(ours, tmp_path / "ours", [callback()])
    lit_fit(ref, tmp_path / "ref", [callback()])
    assert len(ours.train_losses) == 8 and len(ours.val_losses) == 2
    assert ref.val_losses[-1] < ref.val_losses[0], ref.val_losses
    assert all(close(a, b) for a, b in zip(ours.train_losses + ours.val_losses, ref.train_losses + ref.val_losses))
    assert max_rel(ours.parameters(), ref.parameters()) <= RTOL

    at_y = lit_module(OURS[kind], kind)
    lit_fit(at_y, tmp_path / "plain")
    assert at_y.train_losses[:4] == ours.train_losses[:4]  # the same first epoch
    assert all(not close(a, b) for a, b in zip(at_y.val_losses, ours.val_losses))


def reference_x_check(ck: dict, kind: str) -> None:
    """``ck`` (written with the reference optimizer) holds x: its optimizer state is in eval mode and consistent
    with the weights beside it (to y and back to x gives them again)."""
    assert not any(g["train_mode"] for g in ck["optimizer_states"][0]["param_groups"])
    probe = lit_module(REFERENCE[kind], kind)
    probe.load_state_dict(ck["state_dict"])
    opt = probe.configure_optimizers()
    opt.load_state_dict(ck["optimizer_states"][0])
    opt.train()
    assert max_rel(probe.state_dict().values(), ck["state_dict"].values()) > 1e-6  # y is elsewhere
    opt.eval()
    assert max_rel(probe.state_dict().values(), ck["state_dict"].values()) <= 1e-13


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("where", ["while-training", "after-validation"])
def test_lightning_checkpoints_hold_x_and_resume_exactly(kind, where, tmp_path):
    """``while-training``: no validation, ModelCheckpoint at the end of each training epoch and every 2 steps
    (written in train mode: the callback takes the states at x, then training goes on at y);
    ``after-validation``: at the end of each epoch, after validation (already at x). Each checkpoint's model is
    the reference's under the same callback, and that is x; ``fit(ckpt_path=...)`` of a fresh module from the
    first epoch's end ends on exactly the uninterrupted run's weights. (Lightning's own resume from the middle
    of an epoch replays other batches, with or without the callback, so resuming is checked at an epoch's end.)"""
    from lightning.pytorch.callbacks import ModelCheckpoint

    val = where == "after-validation"
    names = ["epoch=0-step=4.ckpt"] + ([] if val else ["steps/epoch=0-step=2.ckpt"])

    def savers(root):
        every = [ModelCheckpoint(dirpath=str(root), every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=not val)]
        if not val:
            every.append(ModelCheckpoint(dirpath=str(root / "steps"), every_n_train_steps=2, save_top_k=-1))
        return every

    ckpts = {}
    for who, cls in (("ours", OURS[kind]), ("reference", REFERENCE[kind])):
        module = lit_module(cls, kind)
        lit_fit(module, tmp_path / who, [callback(), *savers(tmp_path / who)], val=val, enable_checkpointing=True)
        ckpts[who] = (module, [torch.load(tmp_path / who / n, weights_only=False) for n in names])
    (straight, cks), (_, ref_cks) = ckpts["ours"], ckpts["reference"]
    for ck, ref_ck in zip(cks, ref_cks):
        assert max_rel(ck["state_dict"].values(), ref_ck["state_dict"].values()) <= RTOL
        reference_x_check(ref_ck, kind)

    # the same callbacks: a checkpoint written while training takes the run from y to x and back, which moves
    # it by rounding, as a validation does; the resumed run goes through the same switches
    resumed = lit_module(OURS[kind], kind, seed=1)
    lit_fit(resumed, tmp_path / "resumed", [callback(), *savers(tmp_path / "resumed")], val=val,
            enable_checkpointing=True, ckpt_path=str(tmp_path / "ours" / names[0]))
    assert resumed.train_losses == straight.train_losses[4:]
    assert all(torch.equal(p, q) for p, q in zip(resumed.parameters(), straight.parameters()))


def test_importing_nesterov_does_not_import_lightning():
    code = ("import sys, nesterov, nesterov.integrations; nesterov.ScheduleFreeSGD; "
            "assert 'lightning' not in sys.modules, 'lightning imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
