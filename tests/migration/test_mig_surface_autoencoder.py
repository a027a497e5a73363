"""Mirrors the LitAutoEncoder of the Lightning README (https://github.com/Lightning-AI/pytorch-lightning,
"Step 1: Define a LightningModule" / "Step 2: Train!") with the callbacks and loggers of the docs pages
"Early Stopping" (https://lightning.ai/docs/pytorch/stable/common/early_stopping.html), "LearningRateMonitor"
(https://lightning.ai/docs/pytorch/stable/api/lightning.pytorch.callbacks.LearningRateMonitor.html) and
"Logging" (https://lightning.ai/docs/pytorch/stable/extensions/logging.html). Only the import differs;
the data are tiny random vectors instead of MNIST."""

from __future__ import annotations

import csv
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytest

import ember as pl
from ember.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from ember.loggers import CSVLogger, TensorBoardLogger


class LitAutoEncoder(pl.LightningModule):
    def __init__(self, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        self.decoder = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 16))
        self.example_input_array = torch.zeros(1, 16)

    def forward(self, x):
        return self.encoder(x)

    def training_step(self, batch, batch_idx):
        x, _ = batch
        x = x.view(x.size(0), -1)
        loss = F.mse_loss(self.decoder(self.encoder(x)), x)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, _ = batch
        self.log("val_loss", F.mse_loss(self.decoder(self.encoder(x)), x), prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g)
    data = TensorDataset(x, torch.zeros(64))
    return DataLoader(data, batch_size=16, shuffle=True, generator=g), DataLoader(data, batch_size=32)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script says it is deprecated
def test_readme_autoencoder_with_early_stopping_lr_monitor_and_two_loggers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, val = loaders()
    autoencoder = LitAutoEncoder()
    early_stop = EarlyStopping(monitor="val_loss", min_delta=10.0, patience=2, mode="min")  # stops early
    lr_monitor = LearningRateMonitor(logging_interval="epoch")
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=1)
    loggers = [CSVLogger("logs"), TensorBoardLogger("logs")]
    trainer = pl.Trainer(max_epochs=20, callbacks=[early_stop, lr_monitor, checkpoint], logger=loggers,
                         enable_progress_bar=False)
    trainer.fit(model=autoencoder, train_dataloaders=train, val_dataloaders=val)

    assert early_stop.stopped_epoch == 2 and trainer.current_epoch == 3
    assert lr_monitor.lrs["lr-Adam"] == [1e-2, 5e-3, 2.5e-3]
    rows = list(csv.DictReader(open("logs/lightning_logs/version_0/metrics.csv")))
    assert [float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")] == [1e-2, 5e-3, 2.5e-3]
    assert os.path.isfile("logs/lightning_logs/version_0/hparams.yaml")
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(trainer.loggers[1].log_dir))
    assert checkpoint.best_model_path.startswith(os.path.join("logs", "lightning_logs", "version_0", "checkpoints"))

    # "Use the model": load it back on a device, and export it
    model = LitAutoEncoder.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu")
    model.eval()
    embeddings = model(torch.rand(4, 16))
    assert embeddings.shape == (4, 3)
    script = model.to_torchscript()
    assert torch.allclose(script(torch.ones(2, 16)), model(torch.ones(2, 16)))


def test_resuming_the_autoencoder_continues_the_early_stopping_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, val = loaders()
    first = EarlyStopping(monitor="val_loss", min_delta=10.0, patience=3)
    trainer = pl.Trainer(max_epochs=2, callbacks=[first], logger=CSVLogger("logs"), enable_progress_bar=False)
    trainer.fit(LitAutoEncoder(), train, val)
    assert first.wait_count == 1

    again = EarlyStopping(monitor="val_loss", min_delta=10.0, patience=3)
    trainer = pl.Trainer(max_epochs=20, callbacks=[again], logger=CSVLogger("logs", version=0),
                         enable_progress_bar=False)
    trainer.fit(LitAutoEncoder(), train, val, ckpt_path="last")
    assert again.stopped_epoch == 3 and trainer.current_epoch == 4
