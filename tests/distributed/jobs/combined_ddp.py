"""Two training loaders (a dict) under DDP on 2 gloo ranks: each loader is sharded across the ranks.
usage: python combined_ddp.py ROOT [--launch N]. Writes ROOT/rank<R>.txt: the sample ids each rank saw."""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember


class Net(ember.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen += [f"a{int(i)}" for i in batch["a"][0]] + [f"b{int(i)}" for i in batch["b"][0]]
        return sum(self.layer(x.float().unsqueeze(1)).mean() for x, in batch.values())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--launch", type=int, default=0)
    args = parser.parse_args()
    trainer = ember.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, default_root_dir=args.root)
    model = Net()
    loaders = {"a": DataLoader(TensorDataset(torch.arange(8)), batch_size=2),
               "b": DataLoader(TensorDataset(torch.arange(4)), batch_size=2)}
    trainer.fit(model, loaders)
    with open(os.path.join(args.root, f"rank{trainer.global_rank}.txt"), "w") as f:
        f.write(" ".join(model.seen))


if __name__ == "__main__":
    main()
