"""Module hooks beyond the steps: batch transfer, lr_scheduler_step, configure_callbacks, stage flags,
and the Trainer facts configure_optimizers reads (estimated_stepping_batches)."""

from __future__ import annotations

import math

import torch

import ember
from ember.callbacks import Callback, ModelCheckpoint
from tiny import TinyModel, make_loader, trainer_kwargs


def fit(tmp_path, model, val=None, **kw):
    t = ember.Trainer(**trainer_kwargs(tmp_path, **{"max_epochs": 1, "checkpoint_callback": False, **kw}))
    t.fit(model, make_loader(), val)
    return t


def test_batch_transfer_hooks_shape_the_batch_in_every_loop(tmp_path):
    seen = []

    class M(TinyModel):
        def on_before_batch_transfer(self, batch, dataloader_idx):
            x, y = batch
            return {"x": x, "y": y}

        def on_after_batch_transfer(self, batch, dataloader_idx):
            return batch["x"] * 0, batch["y"]

        def training_step(self, batch, batch_idx):
            seen.append(float(batch[0].abs().sum()))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            seen.append(float(batch[0].abs().sum()))

    fit(tmp_path, M(), make_loader(n=8), limit_train_batches=2, num_sanity_val_steps=0)
    assert seen == [0.0, 0.0, 0.0]


def test_an_overridden_lr_scheduler_step_gets_the_monitored_value(tmp_path):
    got = []

    class M(TinyModel):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}

        def lr_scheduler_step(self, scheduler, metric):
            got.append((type(scheduler).__name__, round(metric, 6)))

    t = fit(tmp_path, M(), make_loader(n=8), max_epochs=2, num_sanity_val_steps=0)
    assert [g[0] for g in got] == ["ReduceLROnPlateau"] * 2
    assert got[-1][1] == round(t.callback_metrics["val_loss"].item(), 6)


def test_configure_callbacks_replaces_the_trainers_of_the_same_class(tmp_path):
    class Mine(Callback):
        pass

    own = ModelCheckpoint(dirpath=tmp_path / "own")

    class M(TinyModel):
        def configure_callbacks(self):
            return [own, Mine()]

    t = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    t.fit(M(), make_loader())
    assert t.checkpoint_callbacks == [own] and isinstance(t.callbacks[0], Mine)
    assert (tmp_path / "own").is_dir() and not (tmp_path / "checkpoints").exists()


def test_stage_flags_and_estimated_stepping_batches(tmp_path):
    flags = []

    class M(TinyModel):
        def configure_optimizers(self):
            flags.append(("estimate", self.trainer.estimated_stepping_batches, self.trainer.num_training_batches))
            return super().configure_optimizers()

        def training_step(self, batch, batch_idx):
            t = self.trainer
            flags.append(("train", t.training, t.validating, t.sanity_checking))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            t = self.trainer
            flags.append(("val", t.training, t.validating, t.sanity_checking))

    fit(tmp_path, M(), make_loader(n=8), max_epochs=3, limit_train_batches=1, limit_val_batches=1,
        accumulate_grad_batches=1, num_sanity_val_steps=1)
    assert flags[:4] == [("estimate", 3, 1), ("val", False, True, True), ("train", True, False, False),
                         ("val", False, True, False)]
    t = ember.Trainer(max_epochs=2, accumulate_grad_batches=3, **trainer_kwargs(tmp_path))
    t._train_loader = make_loader(n=40)  # 5 batches -> 2 steps per epoch
    assert t.estimated_stepping_batches == 4
    t._train_loader = None
    assert math.isinf(t.estimated_stepping_batches)


def test_a_datamodules_transfer_hook_wins_over_the_modules(tmp_path):
    seen = []

    class DM(ember.LightningDataModule):
        def train_dataloader(self):
            return make_loader()

        def on_after_batch_transfer(self, batch, dataloader_idx):
            return batch[0] * 0, batch[1]

    class M(TinyModel):
        def on_after_batch_transfer(self, batch, dataloader_idx):
            raise AssertionError("the datamodule's hook should run instead")

        def training_step(self, batch, batch_idx):
            seen.append(float(batch[0].abs().sum()))
            return super().training_step(batch, batch_idx)

    t = ember.Trainer(max_steps=2, **trainer_kwargs(tmp_path, checkpoint_callback=False))
    t.fit(M(), datamodule=DM())
    assert seen == [0.0, 0.0]


def test_module_conveniences(tmp_path, capsys):
    model = TinyModel()
    model.freeze()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    model.unfreeze()
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.print("hello")
    assert capsys.readouterr().out == "hello\n"
    assert model.logger is None and model.global_rank == 0
    t = ember.Trainer(max_steps=1, **trainer_kwargs(tmp_path, checkpoint_callback=False, logger=True))
    loader, val = make_loader(), make_loader(n=8)
    t.fit(model, loader, val)
    assert model.logger is t.logger and model.loggers == [t.logger]
    assert t.train_dataloader is loader and t.val_dataloaders is val
