"""StochasticWeightAveraging, GradientAccumulationScheduler and BackboneFinetuning: the same program under
PyTorch Lightning and under ember ends with the same weights, step count and learning rates."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
import ember.callbacks as ecb

pl = pytest.importorskip("pytorch_lightning")


def run(lib, callbacks, batchnorm=False, max_epochs=5):
    class Net(lib.LightningModule):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4) if batchnorm else nn.Identity())
            self.head = nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.head(self.backbone(x)), y)

        def configure_optimizers(self):
            opt = torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)]

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g))
    torch.manual_seed(1)
    model = Net()
    trainer = lib.Trainer(max_epochs=max_epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(data, batch_size=4))
    lrs = [grp["lr"] for grp in trainer.optimizers[0].param_groups]
    return trainer.global_step, lrs, [p.detach().clone() for p in model.parameters()], model


def same(a, b):
    (step_a, lr_a, w_a, _), (step_b, lr_b, w_b, _) = a, b
    assert step_a == step_b
    assert lr_a == pytest.approx(lr_b)
    for x, y in zip(w_a, w_b):
        torch.testing.assert_close(x, y)


def swa(lib_cb):
    return [lib_cb.StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2, annealing_epochs=2)]


def test_swa_averaged_weights_match_lightning():
    same(run(pl, swa(pl.callbacks)), run(ember, swa(ecb)))


def test_swa_with_gradient_accumulation_schedule_matches_lightning():
    gas = lambda c: [c.GradientAccumulationScheduler({1: 2, 3: 4})]  # noqa: E731
    same(run(pl, swa(pl.callbacks) + gas(pl.callbacks)), run(ember, swa(ecb) + gas(ecb)))


def test_gradient_accumulation_schedule_takes_lightnings_number_of_steps():
    gas = lambda c: [c.GradientAccumulationScheduler({0: 1, 2: 3})]  # noqa: E731
    ours = run(ember, gas(ecb), max_epochs=4)
    same(run(pl, gas(pl.callbacks), max_epochs=4), ours)
    assert ours[0] == 8 + 8 + 3 + 3  # 8 batches a epoch; from epoch 2, 3 batches a step (last step short)


def test_backbone_finetuning_matches_lightning():
    cb = lambda c: [c.BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.5)]  # noqa: E731
    same(run(pl, cb(pl.callbacks), batchnorm=True, max_epochs=3), run(ember, cb(ecb), batchnorm=True, max_epochs=3))


def test_swa_batchnorm_statistics_match_lightnings_extra_epoch():
    """Lightning recomputes BatchNorm statistics in an extra epoch (which also takes one optimizer step);
    ember in one pass at train end: the statistics are the same."""
    ours = run(ember, swa(ecb), batchnorm=True, max_epochs=3)
    theirs = run(pl, swa(pl.callbacks), batchnorm=True, max_epochs=3)
    for a, b in zip(ours[3].buffers(), theirs[3].buffers()):
        torch.testing.assert_close(a, b)
