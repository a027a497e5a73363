"""Mirrors the Lightning docs pages "LightningDataModule" (https://lightning.ai/docs/pytorch/stable/data/datamodule.html:
an MNISTDataModule with prepare_data / setup(stage) / *_dataloader) and "Validate and test a model"
(https://lightning.ai/docs/pytorch/stable/common/evaluation_basic.html: ModelCheckpoint(monitor=...),
trainer.test(datamodule=dm, ckpt_path="best")), with an image classifier that logs accuracy to the
progress bar. Only the import differs; the data are scikit-learn's 8x8 digits instead of MNIST."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import ember as pl
from ember.callbacks import ModelCheckpoint

datasets = pytest.importorskip("sklearn.datasets")


class DigitsDataModule(pl.LightningDataModule):
    def __init__(self, batch_size: int = 64):
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = batch_size

    def prepare_data(self):
        datasets.load_digits()  # "download" once

    def setup(self, stage: str):
        digits = datasets.load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(digits.target)
        full = TensorDataset(x, y)
        if stage == "fit":
            self.train_set, self.val_set, _ = random_split(full, [1200, 297, 300],
                                                           generator=torch.Generator().manual_seed(42))
        if stage == "test":
            _, _, self.test_set = random_split(full, [1200, 297, 300], generator=torch.Generator().manual_seed(42))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.batch_size)


class LitClassifier(pl.LightningModule):
    def __init__(self, lr: float = 3e-3):
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage):
        x, y = batch
        logits = self(x)
        self.log(f"{stage}_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log(f"{stage}_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def test_datamodule_fit_then_test_the_best_checkpoint(tmp_path):
    pl.seed_everything(7)
    dm = DigitsDataModule()
    model = LitClassifier()
    checkpoint = ModelCheckpoint(monitor="val_acc", mode="max")
    trainer = pl.Trainer(max_epochs=3, callbacks=[checkpoint], default_root_dir=tmp_path, enable_progress_bar=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.callback_metrics["val_acc"] > 0.8
    assert {"train_loss_step", "train_loss_epoch", "val_loss", "val_acc"} <= set(trainer.progress_bar_metrics)
    results = trainer.test(datamodule=dm, ckpt_path="best")
    assert trainer.ckpt_path == checkpoint.best_model_path
    assert results[0]["test_acc"] > 0.8 and set(results[0]) == {"test_loss", "test_acc"}
    assert pl.load_checkpoint(checkpoint.best_model_path)["datamodule_hyper_parameters"] == {"batch_size": 64}
