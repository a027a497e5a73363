"""Mirrors Lightning's transformer examples (the "Transformers" template of lightning.ai's examples and
the docs pages "Optimization" (https://lightning.ai/docs/pytorch/stable/common/optimization.html: a
scheduler dict with ``"interval": "step"``), "LearningRateMonitor" and "Predict with a model"): a tiny
``nn.TransformerEncoder`` sequence classifier with a OneCycleLR stepped every batch, the learning rate
logged per step, gradient clipping, ``trainer.predict`` returning one output per batch, and a run
stopped by ``max_steps`` mid-epoch then resumed with ``fit(ckpt_path="last")``. Only the imports differ."""

from __future__ import annotations

import csv
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl
from ember.callbacks import LearningRateMonitor, ModelCheckpoint
from ember.loggers import CSVLogger

VOCAB, SEQ = 12, 6


class LitTransformer(pl.LightningModule):
    def __init__(self, d_model: int = 16, nhead: int = 2, num_layers: int = 1, lr: float = 1e-2,
                 total_steps: int = 24):
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, VOCAB)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens)))  # (batch, seq, vocab)

    def training_step(self, batch, batch_idx):
        tokens, target = batch
        loss = nn.functional.cross_entropy(self(tokens).flatten(0, 1), target.flatten())
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        tokens, target = batch
        self.log("val_loss", nn.functional.cross_entropy(self(tokens).flatten(0, 1), target.flatten()))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        tokens = batch[0]
        return self(tokens).argmax(-1)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr,
                                                        total_steps=self.hparams.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n, SEQ), generator=g)
    target = (tokens + 1) % VOCAB  # learnable: predict the next token id
    return TensorDataset(tokens, target)


def loaders():
    return (DataLoader(data(), batch_size=8, shuffle=True), DataLoader(data(16, seed=1), batch_size=8))


def trainer(root, **kw):
    return pl.Trainer(max_epochs=4, gradient_clip_val=1.0, enable_progress_bar=False, default_root_dir=root,
                      logger=CSVLogger(root), callbacks=[LearningRateMonitor(logging_interval="step"),
                                                         ModelCheckpoint(dirpath=root / "checkpoints",
                                                                         save_last=True)], **kw)


def test_schedule_per_step_lr_monitor_and_predict(tmp_path):
    pl.seed_everything(0)
    model = LitTransformer()
    t = trainer(tmp_path, log_every_n_steps=1)
    train, val = loaders()
    t.fit(model, train, val)
    assert t.global_step == 24

    with open(os.path.join(t.logger.log_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    lrs = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    assert len(lrs) == 24  # one per optimizer step
    peak = lrs.index(max(lrs))
    assert 0 < peak < 23 and lrs[0] < lrs[peak] and lrs[-1] < lrs[0]  # OneCycle: warm up, then anneal
    losses = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    assert losses[-1] < losses[0]

    predictions = t.predict(model, DataLoader(data(20, seed=2), batch_size=8))
    assert [p.shape for p in predictions] == [(8, SEQ), (8, SEQ), (4, SEQ)]
    assert all(p.dtype == torch.int64 for p in predictions)


def test_stopped_mid_epoch_then_resumed_from_last_ends_equal_to_one_run(tmp_path):
    pl.seed_everything(0)
    whole = LitTransformer()
    trainer(tmp_path / "whole").fit(whole, *loaders())

    pl.seed_everything(0)
    first = LitTransformer()
    stopped = trainer(tmp_path / "split", max_steps=9)  # 6 batches an epoch: stops in the second epoch
    stopped.fit(first, *loaders())
    assert (stopped.global_step, stopped.current_epoch) == (9, 2)  # Lightning counts the stopped epoch as done

    second = LitTransformer()
    resumed = trainer(tmp_path / "split")
    resumed.fit(second, *loaders(), ckpt_path="last")
    folder = tmp_path / "split" / "checkpoints"  # ember names the file last.ckpt stands for; Lightning, last.ckpt
    assert resumed.ckpt_path in (str(folder / "last.ckpt"), str(folder / "epoch=1-step=9.ckpt"))
    assert resumed.global_step == 24 and resumed.current_epoch == 4
    for (name, a), b in zip(whole.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.lr_scheduler_configs[0].scheduler.last_epoch == 24
