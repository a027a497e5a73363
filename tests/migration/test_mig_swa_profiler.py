"""Mirrors two Lightning docs pages, each as a user would copy it:
- "Effective Training Techniques", section "Stochastic Weight Averaging": ``Trainer(callbacks=[
  StochasticWeightAveraging(swa_lrs=1e-2)])`` on a model with BatchNorm, then evaluating the averaged model;
- "Find bottlenecks in your code (basic / intermediate)": ``Trainer(profiler="simple")``, an
  ``AdvancedProfiler(dirpath=".", filename="perf_logs")``, and timing a custom action with
  ``self.trainer.profiler.profile("...")`` inside the module.
Written here in our own words with a tiny regression; only the imports differ from a Lightning script."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl
from ember.callbacks import StochasticWeightAveraging
from ember.profilers import AdvancedProfiler, SimpleProfiler

MATRIX_SKIP = {"fsdp": "StochasticWeightAveraging refuses FSDP (as Lightning does)"}


def loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = x @ torch.linspace(-1, 1, 6).unsqueeze(1)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True), DataLoader(TensorDataset(x, y), batch_size=48)


class Regressor(pl.LightningModule):
    def __init__(self, lr=0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))

    def augment(self, x):
        with self.trainer.profiler.profile("augment"):  # the docs' custom action
            return x + 0.01 * torch.randn_like(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(self.augment(x)), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def test_swa_ends_with_averaged_weights_and_recomputed_batchnorm_statistics(tmp_path):
    pl.seed_everything(0)
    model = Regressor()
    swa = StochasticWeightAveraging(swa_lrs=1e-2, swa_epoch_start=3, annealing_epochs=2)
    trainer = pl.Trainer(max_epochs=6, callbacks=[swa], default_root_dir=tmp_path, enable_progress_bar=False)
    train, val = loaders()
    trainer.fit(model, train, val)
    assert int(swa.n_averaged) == 4  # epochs 2..5 (0-based) were averaged
    bn = model.net[1]
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == len(train)  # one pass over the data after fit
    assert trainer.optimizers[0].param_groups[0]["lr"] == 1e-2
    result = trainer.validate(model, val, verbose=False)[0]["val_loss"]
    assert result < 0.5  # the averaged model predicts the linear target


def test_simple_profiler_reports_the_custom_action_with_the_loop_actions(tmp_path, capsys):
    pl.seed_everything(0)
    trainer = pl.Trainer(max_epochs=1, profiler="simple", default_root_dir=tmp_path, enable_progress_bar=False,
                         logger=False)
    trainer.fit(Regressor(), *loaders())
    out = capsys.readouterr().out
    assert "FIT Profiler Report" in out
    for action in ("augment", "run_training_epoch", "run_training_batch", "[LightningModule]Regressor.optimizer_step",
                   f"[Strategy]{type(trainer.strategy).__name__}.training_step"):  # SingleDeviceStrategy in one process
        assert action in out
    assert isinstance(trainer.profiler, SimpleProfiler)
    assert len(trainer.profiler.recorded_durations["augment"]) == 6


def test_advanced_profiler_writes_perf_logs_for_the_fit_stage(tmp_path):
    pl.seed_everything(0)
    profiler = AdvancedProfiler(dirpath=tmp_path, filename="perf_logs")
    trainer = pl.Trainer(max_epochs=1, profiler=profiler, default_root_dir=tmp_path, enable_progress_bar=False,
                         logger=False)
    model = Regressor()
    trainer.fit(model, *loaders())
    rank = f"-{trainer.local_rank}" if trainer.world_size > 1 else ""  # on many ranks each writes its own file
    report = (tmp_path / f"fit-perf_logs{rank}.txt").read_text()
    assert "Profile stats for: augment" in report and "cumulative" in report
