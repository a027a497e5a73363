"""Custom samplers under DDP as users write them (``python custom_samplers.py ROOT --launch 2``; rank 1
re-runs this command line): a DataLoader with a user sampler or batch sampler, the default
``use_distributed_sampler``, ``self(x)`` in ``training_step``, which records the sample ids of its batch.

* ``reverse``: one epoch over 16 samples with a ``Sampler`` that yields them last first.
* ``batch_sampler``: one epoch over 16 samples with a ``BatchSampler`` subclass that yields its batches
  last first.
* ``full`` / ``stopped`` / ``resumed``: 2 epochs over 24 samples drawn by a ``WeightedRandomSampler`` with
  a seeded generator (3 batches per rank per epoch). ``stopped`` ends at step 4 (epoch 1, batch 1) and
  saves last.ckpt; ``resumed`` continues from it with a fresh model, sampler and generator, as a new
  process would have them.

Each rank writes ROOT/rank<R>.json: per run, the ids each step saw, and the final weights.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler, TensorDataset, WeightedRandomSampler

import ember as pl
from ember.callbacks import ModelCheckpoint


class Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.seen: list[list[int]] = []

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append([int(i) for i in x[:, 0]])
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Reverse(Sampler):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(self.n - 1, -1, -1))

    def __len__(self) -> int:
        return self.n


class LastFirst(BatchSampler):
    def __iter__(self):
        return iter(list(super().__iter__())[::-1])


def data(n: int) -> TensorDataset:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(n))
    x[:, 0] = torch.arange(n, dtype=torch.float32)  # column 0 names the sample
    return TensorDataset(x, x[:, 1:].sum(1, keepdim=True))


def weighted() -> DataLoader:
    sampler = WeightedRandomSampler(torch.arange(1.0, 25.0), 24, generator=torch.Generator().manual_seed(3))
    return DataLoader(data(24), batch_size=4, sampler=sampler)


def fit(root: str, loader: DataLoader, **kwargs) -> Recorder:
    pl.seed_everything(0)
    model = Recorder()
    ckpt_path = kwargs.pop("ckpt_path", None)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, **kwargs)
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--launch", type=int, default=2)
    root = ap.parse_args().root
    ckpts = os.path.join(root, "ckpts")
    batches = LastFirst(SequentialSampler(range(16)), 4, False)
    runs = {
        "reverse": fit(root, DataLoader(data(16), batch_size=4, sampler=Reverse(16)), max_epochs=1,
                       enable_checkpointing=False),
        "batch_sampler": fit(root, DataLoader(data(16), batch_sampler=batches), max_epochs=1,
                             enable_checkpointing=False),
        "full": fit(root, weighted(), max_epochs=2, enable_checkpointing=False),
        "stopped": fit(root, weighted(), max_steps=4, callbacks=[ModelCheckpoint(dirpath=ckpts, save_last=True)]),
        "resumed": fit(root, weighted(), max_epochs=2, enable_checkpointing=False,
                       ckpt_path=os.path.join(ckpts, "last.ckpt")),
    }
    out = {name: {"seen": m.seen, "weights": [p.tolist() for p in m.parameters()]} for name, m in runs.items()}
    with open(os.path.join(root, f"rank{runs['full'].global_rank}.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
