"""Mirrors the Lightning docs pages "Saving and loading checkpoints (basic)"
(https://lightning.ai/docs/pytorch/stable/common/checkpointing_basic.html: ``save_hyperparameters``,
``checkpoint["hyper_parameters"]``, ``load_from_checkpoint`` with overrides and ``strict=False``,
``on_save_checkpoint`` / ``on_load_checkpoint``, ``fit(ckpt_path=...)``) and "Checkpointing (intermediate)"
(https://lightning.ai/docs/pytorch/stable/common/checkpointing_intermediate.html: ``ModelCheckpoint(dirpath,
filename="{epoch}-{val_loss:.2f}", save_top_k, monitor, save_last, every_n_train_steps)``,
``trainer.checkpoint_callback.best_model_path``, ``trainer.save_checkpoint``). Only the imports differ,
and ``torch.load(path)`` becomes ``ember.load_checkpoint(path)``."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
import ember as pl
from ember.callbacks import Callback, ModelCheckpoint


class MyLightningModule(pl.LightningModule):
    def __init__(self, learning_rate: float = 0.05, hidden: int = 8):
        super().__init__()
        self.save_hyperparameters()
        self.l1 = nn.Linear(4, hidden)
        self.l2 = nn.Linear(hidden, 1)
        self.batches_seen = 0
        self.restored_batches = None

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.batches_seen += 1
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["something_cool_i_want_to_save"] = {"batches_seen": self.batches_seen}

    def on_load_checkpoint(self, checkpoint):
        self.restored_batches = checkpoint["something_cool_i_want_to_save"]["batches_seen"]


class WiderModule(MyLightningModule):
    """The model grew a layer since the checkpoint was written: load it with strict=False."""

    def __init__(self, learning_rate: float = 0.05, hidden: int = 8):
        super().__init__(learning_rate, hidden)
        self.extra = nn.Linear(1, 1)


class ValLossHistory(Callback):
    def __init__(self):
        self.by_epoch = {}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.by_epoch[trainer.current_epoch] = trainer.callback_metrics["val_loss"].item()


def loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return (DataLoader(TensorDataset(x[:32], y[:32]), batch_size=4, shuffle=True),
            DataLoader(TensorDataset(x[32:], y[32:]), batch_size=8))


def make_trainer(root, max_epochs):
    best = ModelCheckpoint(dirpath=root / "ckpts", filename="{epoch}-{val_loss:.2f}", save_top_k=2,
                           monitor="val_loss", save_last=True)
    by_steps = ModelCheckpoint(dirpath=root / "steps", filename="{step}", save_top_k=-1, every_n_train_steps=8)
    history = ValLossHistory()
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[best, by_steps, history], default_root_dir=root,
                         enable_progress_bar=False, logger=False)
    return trainer, best, history


@pytest.fixture
def trained(tmp_path):
    pl.seed_everything(0)
    trainer, best, history = make_trainer(tmp_path, max_epochs=4)
    model = MyLightningModule()
    trainer.fit(model, *loaders())
    return tmp_path, trainer, model, best, history


def test_top_k_files_are_named_by_the_template_and_best_is_the_lowest(trained):
    root, trainer, _, best, history = trained
    two_best = sorted(history.by_epoch, key=history.by_epoch.get)[:2]
    expected = {f"epoch={e}-val_loss={history.by_epoch[e]:.2f}.ckpt" for e in two_best} | {"last.ckpt"}
    assert set(os.listdir(root / "ckpts")) == expected
    assert trainer.checkpoint_callback is best
    lowest = two_best[0]
    assert trainer.checkpoint_callback.best_model_path == str(
        root / "ckpts" / f"epoch={lowest}-val_loss={history.by_epoch[lowest]:.2f}.ckpt")
    assert float(best.best_model_score) == pytest.approx(history.by_epoch[lowest])
    assert ember.load_checkpoint(best.last_model_path)["global_step"] == 32


def test_every_n_train_steps_saves_on_the_step_count(trained):
    root = trained[0]
    assert set(os.listdir(root / "steps")) == {"step=8.ckpt", "step=16.ckpt", "step=24.ckpt", "step=32.ckpt"}
    assert ember.load_checkpoint(root / "steps" / "step=24.ckpt")["global_step"] == 24


def test_save_checkpoint_then_read_it_like_torch_load(trained):
    root, trainer, model, _, _ = trained
    trainer.save_checkpoint(root / "example.ckpt")
    checkpoint = ember.load_checkpoint(root / "example.ckpt")  # was: torch.load("example.ckpt")
    assert checkpoint["hyper_parameters"] == {"learning_rate": 0.05, "hidden": 8}
    assert checkpoint["something_cool_i_want_to_save"] == {"batches_seen": 32}
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (3, 32)
    for name, value in model.state_dict().items():
        whole = value.full_tensor() if hasattr(value, "full_tensor") else value  # under FSDP the live ones are shards
        assert torch.equal(checkpoint["state_dict"][name], whole), name


def test_load_from_checkpoint_with_an_override_and_strict_false(trained):
    root, trainer, model, best, _ = trained
    x = torch.randn(5, 4)
    loaded = MyLightningModule.load_from_checkpoint(best.best_model_path, learning_rate=0.001)
    assert loaded.hparams.learning_rate == 0.001 and loaded.hparams.hidden == 8
    assert loaded.restored_batches == ember.load_checkpoint(best.best_model_path)["something_cool_i_want_to_save"][
        "batches_seen"]

    with pytest.raises(Exception, match="extra"):
        WiderModule.load_from_checkpoint(best.last_model_path)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        wider = WiderModule.load_from_checkpoint(best.last_model_path, strict=False)
    with torch.no_grad():
        assert torch.equal(wider(x), model(x))  # forward does not use the new layer


def test_fit_from_last_continues_at_the_next_epoch(trained):
    root, _, model, _, _ = trained
    trainer, _, history = make_trainer(root, max_epochs=6)
    resumed = MyLightningModule()
    trainer.fit(resumed, *loaders(), ckpt_path="last")
    assert resumed.restored_batches == 32  # on_load_checkpoint saw the entry on_save_checkpoint wrote
    assert sorted(history.by_epoch) == [4, 5]  # epochs 0-3 were not run again
    assert trainer.global_step == 48 and resumed.batches_seen == 16
    assert set(os.listdir(root / "steps")) == {f"step={s}.ckpt" for s in range(8, 49, 8)}


def test_best_model_score_is_a_tensor_as_in_lightning(trained):
    best = trained[3]
    assert best.best_model_score.item() == min(v.item() for v in best.best_k_models.values())
