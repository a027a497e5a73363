"""Mirrors Lightning's bug-report BoringModel (https://github.com/Lightning-AI/pytorch-lightning,
examples/pytorch/bug_report/bug_report_model.py): RandomDataset, a one-layer BoringModel that logs
train/valid/test losses, a Trainer with limit_*_batches and num_sanity_val_steps=0, then
trainer.fit(...) and trainer.test(...). Only the import differs."""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset

import ember as pl
from ember import LightningModule, Trainer


class RandomDataset(Dataset):
    def __init__(self, size, length):
        self.len = length
        self.data = torch.randn(length, size)

    def __getitem__(self, index):
        return self.data[index]

    def __len__(self):
        return self.len


class BoringModel(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(32, 2)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        loss = self(batch).sum()
        self.log("train_loss", loss)
        return {"loss": loss}

    def validation_step(self, batch, batch_idx):
        loss = self(batch).sum()
        self.log("valid_loss", loss)

    def test_step(self, batch, batch_idx):
        loss = self(batch).sum()
        self.log("test_loss", loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.layer.parameters(), lr=0.1)


def run(root):
    train_data = DataLoader(RandomDataset(32, 64), batch_size=2)
    val_data = DataLoader(RandomDataset(32, 64), batch_size=2)
    test_data = DataLoader(RandomDataset(32, 64), batch_size=2)

    model = BoringModel()
    trainer = Trainer(
        default_root_dir=root,
        limit_train_batches=1,
        limit_val_batches=1,
        limit_test_batches=1,
        num_sanity_val_steps=0,
        max_epochs=1,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=train_data, val_dataloaders=val_data)
    results = trainer.test(model, dataloaders=test_data)
    return trainer, model, results


def test_boring_model_fits_and_tests(tmp_path):
    pl.seed_everything(0)
    trainer, model, results = run(os.fspath(tmp_path))
    assert trainer.global_step == 1 and trainer.current_epoch == 1
    assert list(results[0]) == ["test_loss"]
    assert set(trainer.callback_metrics) == {"test_loss"}  # each trainer call starts its metrics afresh
    folder = tmp_path / "lightning_logs" / "version_0"  # Lightning's default logger and checkpoint layout
    assert (folder / "checkpoints").is_dir() and (folder / "hparams.yaml").is_file()
    loaded = BoringModel.load_from_checkpoint(next((folder / "checkpoints").iterdir()))
    weight = model.layer.weight
    weight = weight.full_tensor() if hasattr(weight, "full_tensor") else weight  # under FSDP the live one is a shard
    assert torch.equal(loaded.layer.weight, weight)
