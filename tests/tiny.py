"""Tiny models and data shared by the tests (imported as `tiny`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember


class TinyModel(ember.Module):
    """A 4 -> 3 -> 2 classifier with a validation loss; optional StepLR."""

    def __init__(self, in_dim: int = 4, out_dim: int = 2, lr: float = 0.1, scheduler: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(in_dim, 3), nn.ReLU(), nn.Linear(3, out_dim))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if self.hparams.scheduler == "step":
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]
        return opt


def make_loader(n: int = 32, batch_size: int = 8, shuffle: bool = True, seed: int = 0, **kwargs) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x.sum(dim=1) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, **kwargs)


def trainer_kwargs(root, **overrides):
    kw = dict(default_root_dir=str(root), enable_progress_bar=False, logger=False)
    kw.update(overrides)
    return kw

