"""BaseFinetuning / BackboneFinetuning: freezing, unfreezing into a new param group, state across a resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ember
from ember.callbacks import BackboneFinetuning, BaseFinetuning
from ember.errors import CheckpointMismatchError, MisconfigurationError
from tiny import make_loader, trainer_kwargs


class Net(ember.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.head = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.head(self.backbone(x)), y)

    def configure_optimizers(self):
        return torch.optim.Adam(filter(lambda p: p.requires_grad, self.parameters()), lr=0.01)


class UnfreezeAt(BaseFinetuning):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.backbone, train_bn=False)

    def finetune_function(self, pl_module, epoch, optimizer):
        if epoch == self.epoch:
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, lr=0.001)


def test_freeze_before_training_leaves_frozen_params_out_of_the_optimizer(tmp_path):
    model = Net()
    before = model.backbone[0].weight.detach().clone()
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=False,
                                             callbacks=[UnfreezeAt(5)]))
    trainer.fit(model, make_loader())
    assert len(trainer.optimizers[0].param_groups) == 1
    assert torch.equal(model.backbone[0].weight, before)
    assert not model.backbone[0].weight.requires_grad


def test_backbone_is_unfrozen_at_its_epoch_with_its_own_lr(tmp_path):
    model = Net()
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=2, enable_checkpointing=False,
                                             callbacks=[UnfreezeAt(1)]))
    trainer.fit(model, make_loader())
    groups = trainer.optimizers[0].param_groups
    assert [g["lr"] for g in groups] == [0.01, 0.001]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.backbone.parameters()}
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_unfreeze_default_lr_is_the_first_group_lr_over_initial_denom_lr():
    layer, other = nn.Linear(2, 2), nn.Linear(2, 2)
    BaseFinetuning.freeze(layer)
    opt = torch.optim.SGD(other.parameters(), lr=0.5)
    BaseFinetuning.unfreeze_and_add_param_group(layer, opt, initial_denom_lr=5.0)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.1)
    assert layer.weight.requires_grad


def test_params_already_in_the_optimizer_are_skipped_with_a_warning():
    layer = nn.Linear(2, 2)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    with pytest.warns(UserWarning, match="already in the optimizer"):
        BaseFinetuning.unfreeze_and_add_param_group(layer, opt)
    assert len(opt.param_groups) == 1


def test_freeze_with_train_bn_keeps_batchnorm_trainable():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    BaseFinetuning.freeze(net, train_bn=True)
    assert not net[0].weight.requires_grad and net[1].weight.requires_grad


def test_resume_after_unfreeze_restores_the_param_groups_and_their_state(tmp_path):
    ckpts = tmp_path / "ck"
    ember.seed_everything(0)
    straight = Net()
    ember.Trainer(**trainer_kwargs(tmp_path / "a", max_epochs=3, enable_checkpointing=False,
                                   callbacks=[UnfreezeAt(1)])).fit(straight, make_loader())
    ember.seed_everything(0)
    first = Net()
    ember.Trainer(**trainer_kwargs(tmp_path / "b", max_epochs=2, callbacks=[
        UnfreezeAt(1), ember.callbacks.ModelCheckpoint(dirpath=ckpts, save_last=True)])).fit(first, make_loader())
    saved = ember.load_checkpoint(ckpts / "last.ckpt")["callbacks"]["UnfreezeAt"]["internal_optimizer_metadata"]
    assert [g["params"] for g in saved["0"]][1] == ["backbone.0.weight", "backbone.0.bias",
                                                     "backbone.1.weight", "backbone.1.bias"]
    resumed = Net()
    trainer = ember.Trainer(**trainer_kwargs(tmp_path / "c", max_epochs=3, enable_checkpointing=False,
                                             callbacks=[UnfreezeAt(1)]))
    trainer.fit(resumed, make_loader(), ckpt_path=ckpts / "last.ckpt")
    assert len(trainer.optimizers[0].param_groups) == 2
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_resume_without_the_callback_that_added_param_groups_says_to_add_it(tmp_path):
    ckpts = tmp_path / "ck"
    ember.Trainer(**trainer_kwargs(tmp_path / "b", max_epochs=2, callbacks=[
        UnfreezeAt(1), ember.callbacks.ModelCheckpoint(dirpath=ckpts, save_last=True)])).fit(Net(), make_loader())
    trainer = ember.Trainer(**trainer_kwargs(tmp_path / "c", max_epochs=3, enable_checkpointing=False))
    with pytest.warns(UserWarning, match="no callback of this Trainer claims"):
        with pytest.raises(CheckpointMismatchError, match="saved with 2 param groups, and this run's has 1.*"
                                                          "BaseFinetuning.*fit with it again"):
            trainer.fit(Net(), make_loader(), ckpt_path=ckpts / "last.ckpt")


def test_backbone_finetuning_needs_a_backbone(tmp_path):
    from tiny import TinyModel

    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[BackboneFinetuning()]))
    with pytest.raises(MisconfigurationError, match="`backbone` attribute"):
        trainer.fit(TinyModel(), make_loader())


def test_backbone_lr_grows_by_lambda_and_aligns_with_the_model_lr(tmp_path):
    model = Net()
    cb = BackboneFinetuning(unfreeze_backbone_at_epoch=1, lambda_func=lambda epoch: 4.0,
                            backbone_initial_ratio_lr=0.1)
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=4, enable_checkpointing=False, callbacks=[cb]))
    trainer.fit(model, make_loader())
    # epoch 1: 0.01 * 0.1 = 0.001; epoch 2: 0.004; epoch 3: 0.016 > 0.01, aligned to 0.01
    assert [g["lr"] for g in trainer.optimizers[0].param_groups] == pytest.approx([0.01, 0.01])
