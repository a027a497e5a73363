"""A training job for the crash/preemption tests: run it, kill it, run it again; it resumes from 'last'.

Shuffling, dropout, weights clipped through ``.data`` in training_step (so a save must hold one
moment's state), AdamW, a per-step LR scheduler, gradient accumulation 2, two DataLoader workers,
validation inside the epoch and bf16 autocast. Prints "step N" after every optimizer step and writes
the final weights to OUT when training completes.

usage: python resume_job.py ROOT OUT
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks import Callback, ModelCheckpoint


class Job(ember.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.25), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        for p in self.net.parameters():  # the WGAN weight-clipping idiom: edits through .data, between saves
            p.data.clamp_(-0.3, 0.3)
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + 0.05 * step))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Announce(Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.optimizer_stepped:
            print(f"step {trainer.global_step}", flush=True)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def main(root: str, out: str) -> None:
    ember.seed_everything(1234)
    train = DataLoader(data(96, 0), batch_size=8, shuffle=True, num_workers=2)
    val = DataLoader(data(16, 1), batch_size=8)
    trainer = ember.Trainer(
        max_epochs=4, default_root_dir=root, accumulate_grad_batches=2, val_check_interval=4,
        precision="bf16-mixed", enable_progress_bar=False, logger=False,
        callbacks=[ModelCheckpoint(dirpath=f"{root}/checkpoints", every_n_train_steps=1, save_last=True),
                   Announce()],
    )
    model = Job()
    trainer.fit(model, train, val, ckpt_path="last")
    if trainer.should_stop:
        print("stopped", flush=True)
        return
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, out)
    print("finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
