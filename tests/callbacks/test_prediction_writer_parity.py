"""BasePredictionWriter: the same writer and predict call under Lightning and ember receive the same
batch indices and predictions, per batch and at the epoch's end, with one loader and with two."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember

pl = pytest.importorskip("pytorch_lightning")


def run(lib, interval, n_loaders):
    calls = []

    class Writer(lib.callbacks.BasePredictionWriter):
        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
            calls.append(("batch", list(batch_indices), batch_idx, dataloader_idx, prediction.tolist()))

        def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
            calls.append(("epoch", _plain(predictions), _plain(batch_indices)))

    class M(lib.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.layer = nn.Linear(2, 1)

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self.layer(batch[0]).squeeze(1)

    loaders = [DataLoader(TensorDataset(torch.arange(10.0).view(5, 2) + k), batch_size=2) for k in range(n_loaders)]
    trainer = lib.Trainer(logger=False, enable_progress_bar=False, callbacks=[Writer(interval)])
    trainer.predict(M(), loaders if n_loaders > 1 else loaders[0])
    return calls


def _plain(x):
    if isinstance(x, torch.Tensor):
        return [round(v, 5) for v in x.tolist()]
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


@pytest.mark.parametrize("interval", ["batch", "epoch", "batch_and_epoch"])
@pytest.mark.parametrize("n_loaders", [1, 2])
def test_writer_calls_match_lightning(interval, n_loaders):
    ours, theirs = run(ember, interval, n_loaders), run(pl, interval, n_loaders)
    assert _plain(ours) == _plain(theirs)
