"""Trainer behaviour: steps, accumulation, limits, validation means, logging, hooks, settings errors."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

import ember
from ember.callbacks import Callback
from tiny import TinyModel, make_loader, trainer_kwargs


def fit(tmp_path, model=None, val=True, **kw):
    kw.setdefault("checkpoint_callback", False)
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, **kw))
    trainer.fit(model or TinyModel(), make_loader(), make_loader(n=16, shuffle=False) if val else None)
    return trainer


def test_global_step_counts_optimizer_steps_with_accumulation(tmp_path):
    assert fit(tmp_path, max_epochs=2, accumulate_grad_batches=3).global_step == 4  # 4 batches -> steps at 3, 4


def test_max_steps_stops_training(tmp_path):
    trainer = fit(tmp_path, max_steps=5)
    assert (trainer.global_step, trainer.current_epoch) == (5, 2)  # Lightning counts the stopped epoch as done


def test_limit_train_batches_as_count_and_fraction(tmp_path):
    assert fit(tmp_path, max_epochs=1, limit_train_batches=2).global_step == 2
    assert fit(tmp_path, max_epochs=1, limit_train_batches=0.5).global_step == 2


def test_validation_means_are_weighted_by_batch_size(tmp_path):
    class Val(TinyModel):
        def validation_step(self, batch, batch_idx):
            x, _ = batch
            self.log("bs", float(len(x)))

    trainer = ember.Trainer(max_epochs=1, checkpoint_callback=False, **trainer_kwargs(tmp_path))
    trainer.fit(Val(), make_loader(), make_loader(n=12, batch_size=8, shuffle=False))  # batches of 8 and 4
    assert trainer.callback_metrics["bs"].item() == pytest.approx((8 * 8 + 4 * 4) / 12)


def test_old_style_validation_dict_feeds_the_same_means(tmp_path):
    class Old(TinyModel):
        def validation_step(self, batch, batch_idx):
            return {"val_loss": torch.tensor(float(batch_idx))}

    trainer = fit(tmp_path, Old(), max_epochs=1, limit_val_batches=2)
    assert trainer.callback_metrics["val_loss"].item() == pytest.approx(0.5)


def test_on_step_and_on_epoch_both_give_suffixed_names(tmp_path):
    class Both(TinyModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("l", loss, on_step=True, on_epoch=True)
            return loss

    assert {"l_step", "l_epoch"} <= set(fit(tmp_path, Both(), max_epochs=1).callback_metrics)


def test_csv_logger_writes_metrics_under_the_root(tmp_path):
    fit(tmp_path, max_epochs=2, logger=ember.loggers.CSVLogger(tmp_path, name="logs"), log_every_n_steps=1)
    rows = list(csv.DictReader(open(tmp_path / "logs/version_0/metrics.csv")))
    assert {"epoch", "step", "train_loss", "val_loss"} <= set(rows[0])
    assert len([r for r in rows if r["val_loss"]]) == 2
    assert len([r for r in rows if r["train_loss"]]) == 8


def test_progress_bar_draws_and_can_be_turned_off(tmp_path, capsys):
    fit(tmp_path, max_epochs=1, enable_progress_bar=True)
    assert "Epoch 0" in capsys.readouterr().err
    fit(tmp_path, max_epochs=1, enable_progress_bar=False)
    assert capsys.readouterr().err == ""


def test_gradient_clipping_bounds_the_norm(tmp_path):
    norms = []

    class Big(TinyModel):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) * 1e6

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    model = Big()
    orig_step = torch.optim.SGD.step

    def spy_step(opt, *a, **k):
        norms.append(torch.nn.utils.get_total_norm([p.grad for g in opt.param_groups for p in g["params"]]))
        return orig_step(opt, *a, **k)

    torch.optim.SGD.step = spy_step
    try:
        fit(tmp_path, model, max_steps=2, gradient_clip_val=1.0)
    finally:
        torch.optim.SGD.step = orig_step
    assert norms and all(n <= 1.0 + 1e-4 for n in norms)


def test_training_step_returning_none_skips_the_backward(tmp_path):
    class Skip(TinyModel):
        def training_step(self, batch, batch_idx):
            return None

    model = Skip()
    before = [p.clone() for p in model.parameters()]
    fit(tmp_path, model, max_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bad_training_step_return_is_explained(tmp_path):
    class Bad(TinyModel):
        def training_step(self, batch, batch_idx):
            return {"lss": 1}

    with pytest.raises(ember.MisconfigurationError, match=r"dict with a 'loss' entry.*\['lss'\]"):
        fit(tmp_path, Bad(), max_epochs=1)


def test_optimizer_idx_training_step_steps_each_optimizer_on_its_own_loss(tmp_path):
    class Gan(ember.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 1)
            self.b = nn.Linear(4, 1)

        def training_step(self, batch, batch_idx, optimizer_idx):
            x, _ = batch
            return (self.a(x) if optimizer_idx == 0 else self.b(x)).pow(2).mean() + 0 * self.b(x).sum()

        def configure_optimizers(self):
            return [torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.1)]

    model = Gan()
    b_before = model.b.weight.clone()
    trainer = fit(tmp_path, model, val=False, max_epochs=1)
    assert trainer.global_step == 4 and not torch.equal(model.b.weight, b_before)
    assert all(p.requires_grad for p in model.parameters())


def test_validation_does_not_disturb_training_randomness(tmp_path):
    class Drop(TinyModel):
        def validation_step(self, batch, batch_idx):
            torch.rand(100)  # validation drawing random numbers must not shift training's stream
            super().validation_step(batch, batch_idx)

    ember.seed_everything(1)
    with_val = fit(tmp_path, Drop(), max_epochs=2).module
    ember.seed_everything(1)
    without = fit(tmp_path, Drop(), val=False, max_epochs=2).module
    assert all(torch.equal(a, b) for a, b in zip(with_val.parameters(), without.parameters()))


HOOKS = ["on_fit_start", "on_train_start", "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end",
         "on_validation_start", "on_validation_epoch_end", "on_validation_end", "on_train_epoch_end",
         "on_train_end", "on_fit_end"]


def test_callback_hooks_run_in_order(tmp_path):
    calls = []

    def recorder(name):
        return lambda self, *args: calls.append(name)

    Rec = type("Rec", (Callback,), {name: recorder(name) for name in HOOKS})
    fit(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[Rec()])
    assert calls == HOOKS


def test_module_hooks_run_too(tmp_path):
    calls = []

    class Hooked(TinyModel):
        def on_train_epoch_end(self):
            calls.append(self.current_epoch)

    fit(tmp_path, Hooked(), max_epochs=2)
    assert calls == [0, 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "8"}, "precision must be one of"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches must be an int >= 1"),
        ({"limit_train_batches": 1.5}, "limit_train_batches must be"),
        ({"max_epochs": "3"}, "max_epochs must be an int"),
        ({"checkpoint_callback": "yes"}, "checkpoint_callback must be a ModelCheckpoint"),
        ({"callbacks": [object()]}, "must be ember.callbacks.Callback instances"),
        ({"val_check_interval": 0}, "val_check_interval must be"),
    ],
)
def test_bad_settings_are_explained(kwargs, message):
    with pytest.raises(ember.MisconfigurationError, match=message):
        ember.Trainer(**kwargs)


def test_fit_without_data_is_explained(tmp_path):
    with pytest.raises(ember.MisconfigurationError, match="no training data"):
        ember.Trainer(**trainer_kwargs(tmp_path)).fit(TinyModel())


def test_save_checkpoint_before_fit_is_explained(tmp_path):
    with pytest.raises(ember.MisconfigurationError, match="call trainer.fit"):
        ember.Trainer(**trainer_kwargs(tmp_path)).save_checkpoint(tmp_path / "x.ckpt")


def test_disabled_checkpointing_with_a_model_checkpoint_is_an_error():
    from ember.callbacks import ModelCheckpoint

    with pytest.raises(ember.MisconfigurationError, match="remove one of the two"):
        ember.Trainer(enable_checkpointing=False, callbacks=[ModelCheckpoint()])


def test_checkpoint_has_every_documented_key(tmp_path):
    trainer = fit(tmp_path, TinyModel(scheduler="step"), max_epochs=1, precision="16-mixed")
    trainer.save_checkpoint(tmp_path / "full.ckpt")
    ckpt = ember.load_checkpoint(tmp_path / "full.ckpt")
    assert {"epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers", "callbacks",
            "hyper_parameters", "amp_scaling_state", "loops", "rng", "ember_version"} <= set(ckpt)
    assert len(ckpt["optimizer_states"]) == 1 and len(ckpt["lr_schedulers"]) == 1


def test_bf16_mixed_trains_under_autocast(tmp_path):
    seen = []

    class Spy(TinyModel):
        def training_step(self, batch, batch_idx):
            seen.append(self.net[0](batch[0]).dtype)
            return super().training_step(batch, batch_idx)

    fit(tmp_path, Spy(), max_steps=1, precision="bf16-mixed")
    assert seen == [torch.bfloat16]


def test_unstorable_callback_state_names_its_path_and_harms_nothing(tmp_path):
    class Bad(Callback):
        def state_dict(self):
            return {"fn": print}

    trainer = fit(tmp_path, max_epochs=1)
    trainer.save_checkpoint(tmp_path / "good.ckpt")
    before = (tmp_path / "good.ckpt").read_bytes()
    trainer.callbacks.append(Bad())
    with pytest.raises(ember.CheckpointError, match=r"callbacks\..*Bad\.fn: .*cannot be stored"):
        trainer.save_checkpoint(tmp_path / "good.ckpt")
    assert (tmp_path / "good.ckpt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.ckpt"]
