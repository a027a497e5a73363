"""Mirrors Lightning's transfer-learning example (``examples/pytorch/domain_templates/computer_vision_fine_tuning.py``
and the "Transfer Learning" docs page): a pretrained feature extractor is frozen, a new head trains,
and a ``BaseFinetuning`` subclass unfreezes the extractor at a milestone with its own learning rate.
Written here with a tiny MLP in place of the ResNet; only the imports differ from a Lightning script."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl
from ember.callbacks import ModelCheckpoint
from ember.callbacks.finetuning import BaseFinetuning

class MilestonesFinetuning(BaseFinetuning):
    def __init__(self, milestones=(1, 2), train_bn=False):
        super().__init__()
        self.milestones, self.train_bn = milestones, train_bn

    def freeze_before_training(self, pl_module):
        self.freeze(modules=pl_module.feature_extractor, train_bn=self.train_bn)

    def finetune_function(self, pl_module, epoch, optimizer):
        if epoch == self.milestones[0]:  # the last layer of the extractor first
            self.unfreeze_and_add_param_group(modules=pl_module.feature_extractor[-2:], optimizer=optimizer,
                                              train_bn=self.train_bn)
        elif epoch == self.milestones[1]:  # then the rest
            self.unfreeze_and_add_param_group(modules=pl_module.feature_extractor[:-2], optimizer=optimizer,
                                              train_bn=self.train_bn)


class TransferLearningModel(pl.LightningModule):
    def __init__(self, lr=1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.feature_extractor = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8),
                                               nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.feature_extractor(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        trainable = filter(lambda p: p.requires_grad, self.parameters())
        optimizer = torch.optim.Adam(trainable, lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.5)]


def whole(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t  # under FSDP the live ones are shards


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True), DataLoader(TensorDataset(x, y), batch_size=32)


def test_the_extractor_unfreezes_in_two_milestones_each_with_a_tenth_of_the_lr(tmp_path):
    pl.seed_everything(0)
    model = TransferLearningModel()
    frozen_start = model.feature_extractor[0].weight.detach().clone()
    seen = []

    class Watch(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append([round(g["lr"], 8) for g in trainer.optimizers[0].param_groups])

    trainer = pl.Trainer(max_epochs=3, callbacks=[MilestonesFinetuning(), Watch()], default_root_dir=tmp_path,
                         enable_progress_bar=False, logger=False)
    trainer.fit(model, *data())
    # epoch 1: the new group gets lr / 10; MultiStepLR's milestone (its 2nd step, at epoch 1's end) halves both;
    # epoch 2: the last group gets the halved lr / 10 (the same lists as under Lightning 2.6)
    assert seen == [[0.01], [0.005, 0.0005], [0.005, 0.0005, 0.0005]]
    assert not torch.equal(whole(model.feature_extractor[0].weight), frozen_start)  # trained from epoch 2 on
    assert trainer.callback_metrics["val_acc"] > 0.5


def test_a_run_resumed_after_the_first_milestone_ends_like_an_uninterrupted_one(tmp_path):
    pl.seed_everything(0)
    straight = TransferLearningModel()
    pl.Trainer(max_epochs=3, callbacks=[MilestonesFinetuning()], default_root_dir=tmp_path / "a",
               enable_progress_bar=False, logger=False).fit(straight, *data())
    pl.seed_everything(0)
    first = TransferLearningModel()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    pl.Trainer(max_epochs=2, callbacks=[MilestonesFinetuning(), ck], default_root_dir=tmp_path / "b",
               enable_progress_bar=False, logger=False).fit(first, *data())
    resumed = TransferLearningModel()
    trainer = pl.Trainer(max_epochs=3, callbacks=[MilestonesFinetuning(), ModelCheckpoint(dirpath=tmp_path / "ck")],
                         default_root_dir=tmp_path / "c", enable_progress_bar=False, logger=False)
    trainer.fit(resumed, *data(), ckpt_path="last")
    assert len(trainer.optimizers[0].param_groups) == 3
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(whole(a), whole(b))
