"""Callbacks under real Lightning and ember (the parity harness, ``tests/parity.py``)."""

from __future__ import annotations

import pytest
import torch

import ember
from parity import assert_same_run, pl, run


def with_schedulers(lib):
    """Two optimizers (one named scheduler, one with named parameter groups), manual optimization."""

    class Two(lib.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.a, self.b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            for opt, layer in zip(self.optimizers(), (self.a, self.b)):
                loss = torch.nn.functional.cross_entropy(layer(x), y)
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
            self.log("train_loss", loss)

        def on_train_epoch_end(self):
            for s in self.lr_schedulers():
                s.step()

        def configure_optimizers(self):
            a = torch.optim.SGD(self.a.parameters(), lr=0.1, momentum=0.9)
            b = torch.optim.Adam([{"params": [self.b.weight], "name": "weights"},
                                  {"params": [self.b.bias], "name": "bias", "lr": 0.01}], lr=0.02)
            return [a, b], [{"scheduler": torch.optim.lr_scheduler.StepLR(a, 1, gamma=0.5), "name": "warmup"},
                            torch.optim.lr_scheduler.StepLR(b, 1, gamma=0.1)]

    return Two()


@pytest.mark.parametrize("interval", [None, "step", "epoch"])
def test_learning_rate_monitor_names_values_and_callback_metrics(tmp_path, interval):
    runs = []
    for lib in (pl, ember):
        monitor = lib.callbacks.LearningRateMonitor(logging_interval=interval, log_momentum=True)
        runs.append((run(lib, with_schedulers, tmp_path, callbacks_extra=[monitor], fit_kw={"val_dataloaders": None},
                         max_epochs=2, log_every_n_steps=2), monitor))
    (lightning, l_mon), (ours, e_mon) = runs
    assert {k: [round(v, 6) for v in vs] for k, vs in e_mon.lrs.items()} == \
        {k: [round(v, 6) for v in vs] for k, vs in l_mon.lrs.items()}
    assert e_mon.last_momentum_values == pytest.approx(l_mon.last_momentum_values)
    assert_same_run(lightning, ours)
