"""Mirrors the Lightning docs page "Trainer" (https://lightning.ai/docs/pytorch/stable/common/trainer.html),
flag by flag in its "Trainer flags" section: each test sets one flag the way that page shows and checks
what the page says it does. Only the imports differ from a Lightning script."""

from __future__ import annotations

import csv
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl
from ember.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from ember.loggers import CSVLogger, TensorBoardLogger


def loader(n=32, batch_size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


class LitModel(pl.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, 1)
        self.train_batches = 0
        self.val_batches = 0
        self.sanity_batches = 0
        self.val_runs = []  # (epoch, global_step) at the end of each real validation run
        self.step_dtypes = set()

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        self.step_dtypes.add(out.dtype)
        loss = nn.functional.mse_loss(out.float(), y)
        self.train_batches += 1
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        if self.trainer.sanity_checking:
            self.sanity_batches += 1
        else:
            self.val_batches += 1
        self.log("val_loss", nn.functional.mse_loss(self(x).float(), y))

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.val_runs.append((self.current_epoch, self.global_step))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def fit(tmp_path, model=None, **flags):
    flags = {"enable_progress_bar": False, "default_root_dir": tmp_path, "logger": False, **flags}
    model = model or LitModel()
    trainer = pl.Trainer(**flags)
    trainer.fit(model, loader(), loader(n=16))
    return trainer, model


def test_fast_dev_run_runs_one_batch_of_each_and_writes_nothing(tmp_path):
    trainer, model = fit(tmp_path, fast_dev_run=True, logger=True, max_epochs=10)
    assert (model.train_batches, model.val_batches, model.sanity_batches) == (1, 1, 0)
    assert trainer.global_step == 1
    assert os.listdir(tmp_path) == []  # no checkpoints, no logs
    trainer, model = fit(tmp_path, fast_dev_run=3)
    assert (model.train_batches, model.val_batches) == (3, 3)


def test_limit_batches_take_a_fraction_or_a_count(tmp_path):
    _, model = fit(tmp_path, max_epochs=1, limit_train_batches=0.25, limit_val_batches=2, num_sanity_val_steps=0)
    assert (model.train_batches, model.val_batches) == (2, 2)  # 8 train batches * 0.25, 2 of 4 val batches


def test_max_epochs_and_min_epochs(tmp_path):
    trainer, model = fit(tmp_path, max_epochs=3)
    assert trainer.current_epoch == 3 and model.train_batches == 24

    class StopAtOnce(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    trainer, model = fit(tmp_path, max_epochs=10, min_epochs=3, callbacks=[StopAtOnce()])
    assert trainer.current_epoch == 3 and model.train_batches == 24  # min_epochs wins over should_stop


def test_max_steps_stops_mid_epoch(tmp_path):
    trainer, model = fit(tmp_path, max_steps=5, max_epochs=-1)
    assert trainer.global_step == 5 and model.train_batches == 5


@pytest.mark.parametrize("interval, expected", [(0.5, [(0, 4), (0, 8)]), (3, [(0, 3), (0, 6)])])
def test_val_check_interval_float_and_int(tmp_path, interval, expected):
    _, model = fit(tmp_path, max_epochs=1, val_check_interval=interval, num_sanity_val_steps=0)
    assert model.val_runs == expected


def test_check_val_every_n_epoch(tmp_path):
    _, model = fit(tmp_path, max_epochs=4, check_val_every_n_epoch=2, num_sanity_val_steps=0)
    assert model.val_runs == [(1, 16), (3, 32)]


def test_accumulate_grad_batches_steps_the_optimizer_every_n_batches(tmp_path):
    trainer, model = fit(tmp_path, max_epochs=1, accumulate_grad_batches=4)
    assert model.train_batches == 8 and trainer.global_step == 2


def test_gradient_clip_val_bounds_the_update(tmp_path):
    def first_update(**flags):
        pl.seed_everything(0)
        model = LitModel(lr=1.0)  # plain SGD, lr 1: the update is minus the (clipped) gradient
        before = torch.cat([p.detach().clone().flatten() for p in model.parameters()])
        fit(tmp_path, model=model, max_steps=1, num_sanity_val_steps=0, **flags)
        after = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]  # FSDP: whole
        return (torch.cat([p.detach().flatten() for p in after]) - before).norm().item()

    assert first_update() > 0.5
    assert first_update(gradient_clip_val=0.01) == pytest.approx(0.01, rel=1e-4)
    assert first_update(gradient_clip_val=0.01, gradient_clip_algorithm="value") <= 0.01 * 5 ** 0.5 + 1e-6


def test_deterministic_true_makes_runs_repeat(tmp_path):
    try:
        weights = []
        for _ in range(2):
            pl.seed_everything(3)
            trainer, model = fit(tmp_path, max_epochs=2, deterministic=True)
            assert torch.are_deterministic_algorithms_enabled()
            weights.append(model.layer.weight.detach().clone())
        assert torch.equal(*weights)
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("steps, expected", [(2, 2), (0, 0), (-1, 4)])
def test_num_sanity_val_steps(tmp_path, steps, expected):
    _, model = fit(tmp_path, max_epochs=1, num_sanity_val_steps=steps)
    assert model.sanity_batches == expected and model.val_batches == 4


@pytest.mark.parametrize("every, rows", [(2, 4), (1, 8)])
def test_log_every_n_steps(tmp_path, every, rows):
    trainer, _ = fit(tmp_path, max_epochs=1, log_every_n_steps=every, logger=CSVLogger(tmp_path))
    with open(os.path.join(trainer.logger.log_dir, "metrics.csv")) as f:
        logged = [r for r in csv.DictReader(f) if r.get("train_loss_step")]
    assert len(logged) == rows


def test_enable_progress_bar_false_prints_nothing(tmp_path, capsys):
    trainer, _ = fit(tmp_path, max_epochs=1, enable_progress_bar=True)
    assert ("Epoch 0" in capsys.readouterr().err) == trainer.is_global_zero  # the bar is rank 0's (one process: it)
    fit(tmp_path, max_epochs=1, enable_progress_bar=False)
    assert capsys.readouterr().err == ""


def test_progress_bar_callback_property(tmp_path):
    trainer, _ = fit(tmp_path, max_epochs=1, enable_progress_bar=False)
    assert trainer.progress_bar_callback is None
    bar = TQDMProgressBar(refresh_rate=5)
    trainer, _ = fit(tmp_path, max_epochs=1, callbacks=[bar])
    assert trainer.progress_bar_callback is bar


def test_default_root_dir_holds_logs_and_checkpoints(tmp_path):
    trainer, _ = fit(tmp_path, max_epochs=1, logger=True)
    assert trainer.default_root_dir == str(tmp_path)
    # Lightning's default layout: lightning_logs/version_N holds the logs and checkpoints/
    assert sorted(os.listdir(tmp_path / "lightning_logs" / "version_0" / "checkpoints")) == ["epoch=0-step=8.ckpt"]
    assert "hparams.yaml" in os.listdir(tmp_path / "lightning_logs" / "version_0")


def test_callbacks_list_is_called_and_listed(tmp_path):
    class PrintingCallback(Callback):
        def __init__(self):
            self.events = []

        def on_train_start(self, trainer, pl_module):
            self.events.append("start")

        def on_train_end(self, trainer, pl_module):
            self.events.append("end")

    printing, stopping = PrintingCallback(), EarlyStopping(monitor="val_loss", patience=100)
    trainer, _ = fit(tmp_path, max_epochs=1, callbacks=[printing, stopping])
    assert printing.events == ["start", "end"]
    assert printing in trainer.callbacks and trainer.early_stopping_callback is stopping
    assert isinstance(trainer.checkpoint_callback, ModelCheckpoint)


def test_two_loggers_both_write_and_the_first_places_checkpoints(tmp_path):
    pytest.importorskip("tensorboard")
    csv_logger, tb_logger = CSVLogger(tmp_path), TensorBoardLogger(tmp_path)
    trainer, _ = fit(tmp_path, max_epochs=2, logger=[csv_logger, tb_logger])
    assert trainer.logger is csv_logger and trainer.loggers == [csv_logger, tb_logger]
    version = tmp_path / "lightning_logs" / "version_0"
    assert (version / "metrics.csv").is_file() and (version / "hparams.yaml").is_file()
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tb_logger.log_dir))
    assert os.listdir(version / "checkpoints") == ["epoch=1-step=16.ckpt"]
    with open(version / "metrics.csv") as f:
        epochs = {r["epoch"] for r in csv.DictReader(f) if r.get("val_loss")}
    assert epochs == {"0", "1"}


def test_bf16_mixed_on_cpu_autocasts_the_step_and_keeps_float32_weights(tmp_path):
    trainer, model = fit(tmp_path, max_epochs=1, precision="bf16-mixed", accelerator="cpu")
    assert model.step_dtypes == {torch.bfloat16}
    assert model.layer.weight.dtype == torch.float32
    assert trainer.callback_metrics["train_loss_epoch"] < 100


def test_an_unimplemented_flag_is_refused_by_name(tmp_path):
    with pytest.raises(pl.MisconfigurationError, match="sync_batchnorm"):
        pl.Trainer(sync_batchnorm=True, default_root_dir=tmp_path)
    with pytest.raises(pl.MisconfigurationError, match="plugins"):
        pl.Trainer(plugins=["x"], default_root_dir=tmp_path)
