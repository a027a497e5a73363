"""The tuner on 2 ranks (``python tuner_ranks.py ROOT --strategy ddp|fsdp --launch 2``; rank 1 re-runs this
command line): ``lr_find`` then ``scale_batch_size`` then a fit, each search saving the run to a temporary
checkpoint under ROOT that every rank reads back. Each rank writes ROOT/rank<R>.json: the suggested lr,
the batch size found, the global step of the fit, and the temporary checkpoints left in ROOT."""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl
from ember.tuner import Tuner


class Data(pl.LightningDataModule):
    def __init__(self, batch_size=2):
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=self.batch_size)


class Model(pl.LightningModule):
    def __init__(self, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--strategy", default="ddp")
    ap.add_argument("--launch", type=int, default=2)
    args = ap.parse_args()
    pl.seed_everything(0)
    model, data = Model(), Data()
    trainer = pl.Trainer(accelerator="cpu", devices=args.launch, strategy=args.strategy, max_epochs=1,
                         default_root_dir=args.root, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    tuner = Tuner(trainer)
    lr = tuner.lr_find(model, datamodule=data, num_training=20).suggestion()
    size = tuner.scale_batch_size(model, datamodule=data, mode="power", max_trials=3, steps_per_trial=1)
    trainer.fit(model, datamodule=data)
    out = {"lr": lr, "batch_size": size, "global_step": trainer.global_step,
           "left": sorted(n for n in os.listdir(args.root) if n.startswith(".tuner"))}
    with open(os.path.join(args.root, f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
