"""Mirrors two Lightning docs pages, in our own words:
- "Effective Training Techniques": the learning-rate finder (``tuner = Tuner(trainer)``,
  ``lr_finder = tuner.lr_find(model)``, ``new_lr = lr_finder.suggestion()``, ``model.hparams.lr = new_lr``,
  ``trainer.fit(model)``) and the batch-size finder (``tuner.scale_batch_size(model, mode="power")`` on a
  datamodule with a ``batch_size`` attribute);
- "Arbitrary iterable support" / multiple datasets: ``training_step`` receiving a dict of batches
  when ``train_dataloader`` returns a dict of loaders, and ``CombinedLoader(iterables, mode=...)``.
Only the imports differ from a Lightning script."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl
from ember.tuner import Tuner
from ember.utilities.combined_loader import CombinedLoader



class Data(pl.LightningDataModule):
    def __init__(self, batch_size=4):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(128, 5, generator=g)
        self.train_set = TensorDataset(x, (x.sum(1) > 0).long())

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)


class Classifier(pl.LightningModule):
    def __init__(self, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(5, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def test_lr_finder_then_fit_with_the_suggestion(tmp_path):
    pl.seed_everything(0)
    model, data = Classifier(), Data(batch_size=8)
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    tuner = Tuner(trainer)
    lr_finder = tuner.lr_find(model, datamodule=data, num_training=40)
    new_lr = lr_finder.suggestion()
    assert 1e-8 < new_lr < 1 and model.hparams.lr == new_lr  # update_attr sets it already
    model.hparams.lr = new_lr
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 32 and trainer.optimizers[0].param_groups[0]["lr"] == new_lr
    assert not list(tmp_path.glob(".*.ckpt"))


def test_batch_size_finder_grows_the_datamodules_batch_size(tmp_path):
    pl.seed_everything(0)
    model, data = Classifier(), Data()
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    found = Tuner(trainer).scale_batch_size(model, datamodule=data, mode="power")
    assert found == data.batch_size == 128  # doubled until the dataset's length (no OOM on CPU)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 1


class TwoTasks(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(5, 8)
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 2), "b": nn.Linear(8, 2)})
        self.sizes = []

    def training_step(self, batch, batch_idx):
        self.sizes.append({k: len(v[0]) for k, v in batch.items()})
        return sum(nn.functional.cross_entropy(self.heads[k](self.shared(x)), y) for k, (x, y) in batch.items())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def two_loaders():
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.randn(40, 5, generator=g), torch.randn(16, 5, generator=g)
    return {"a": DataLoader(TensorDataset(xa, (xa[:, 0] > 0).long()), batch_size=8),
            "b": DataLoader(TensorDataset(xb, (xb[:, 1] > 0).long()), batch_size=8)}


def test_a_dict_of_loaders_trains_on_both_until_the_longest_ends(tmp_path):
    model = TwoTasks()
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    trainer.fit(model, two_loaders())
    assert len(model.sizes) == 5 and all(s == {"a": 8, "b": 8} for s in model.sizes)


def test_combined_loader_min_size_stops_with_the_shorter_one(tmp_path):
    model = TwoTasks()
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    trainer.fit(model, CombinedLoader(two_loaders(), mode="min_size"))
    assert len(model.sizes) == 2


def test_combined_loader_sequential_mode_reads_one_loader_after_the_other():
    seen = [(idx, dl_idx, len(batch[0])) for batch, idx, dl_idx in CombinedLoader(two_loaders(), "sequential")]
    assert seen == [(0, 0, 8), (1, 0, 8), (2, 0, 8), (3, 0, 8), (4, 0, 8), (0, 1, 8), (1, 1, 8)]
