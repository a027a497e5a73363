"""The same tiny program under Lightning and ember with a SimpleProfiler: every action ember records is one
Lightning records too, with the same number of calls for the loop's own actions."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember

pl = pytest.importorskip("pytorch_lightning")
from pytorch_lightning.profilers import SimpleProfiler as PLSimple  # noqa: E402

from ember.profilers import SimpleProfiler  # noqa: E402

LOOP_ACTIONS = ["run_training_epoch", "run_training_batch", "[_TrainingEpochLoop].train_dataloader_next",
                "[Strategy]SingleDeviceStrategy.training_step", "[Strategy]SingleDeviceStrategy.validation_step",
                "[Strategy]SingleDeviceStrategy.backward", "[Strategy]SingleDeviceStrategy.batch_to_device"]


def run(lib, profiler, callback_base):
    class Probe(callback_base):
        def on_train_epoch_end(self, trainer, pl_module):
            pass

    class M(lib.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.layer(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val", nn.functional.mse_loss(self.layer(x), y))

        def on_train_epoch_start(self):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = TensorDataset(torch.randn(12, 4), torch.randn(12, 1))
    trainer = lib.Trainer(max_epochs=2, profiler=profiler, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, callbacks=[Probe()])
    trainer.fit(M(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=6))
    return {k: len(v) for k, v in profiler.recorded_durations.items()}


def test_ember_records_lightnings_action_names_and_counts(capsys):
    ours = run(ember, SimpleProfiler(), ember.callbacks.Callback)
    theirs = run(pl, PLSimple(), pl.callbacks.Callback)
    assert set(ours) <= set(theirs), sorted(set(ours) - set(theirs))
    probe = next(a for a in ours if a.startswith("[Callback]") and a.endswith("Probe.on_train_epoch_end"))
    for action in LOOP_ACTIONS + [probe, "[LightningModule]M.on_train_epoch_start",
                                  "[LightningModule]M.optimizer_step"]:
        assert ours[action] == theirs[action], action
