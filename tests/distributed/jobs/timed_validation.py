"""A time-based ``val_check_interval`` under DDP on 2 gloo ranks whose clocks disagree: rank 1 starts its clock
0.3 s after rank 0 (it sleeps in on_fit_start), so each rank alone would decide differently when the interval
has passed.
usage: python timed_validation.py ROOT [--launch N]. Writes ROOT/rank<R>.txt: the global steps at which
validation started, then "done"."""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember


class Net(ember.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.validated_at = []

    def on_fit_start(self):
        if self.global_rank == 1:
            time.sleep(0.3)

    def training_step(self, batch, batch_idx):
        time.sleep(0.01)
        return self.layer(batch[0]).pow(2).mean()

    def on_validation_start(self):
        self.validated_at.append(self.trainer.global_step)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch[0]).pow(2).mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--launch", type=int, default=0)
    args = parser.parse_args()
    trainer = ember.Trainer(accelerator="cpu", devices=args.launch or "auto", strategy="ddp", max_epochs=2,
                            val_check_interval={"seconds": 0.1}, num_sanity_val_steps=0, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, default_root_dir=args.root)
    model = Net()
    data = TensorDataset(torch.randn(80, 2))
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=40))
    with open(os.path.join(args.root, f"rank{trainer.global_rank}.txt"), "w") as f:
        f.write(" ".join(map(str, model.validated_at)) + " done")


if __name__ == "__main__":
    main()
