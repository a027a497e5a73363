"""LightningDataModule: hooks, loaders per stage, checkpointed state and hparams, module-owned data."""

from __future__ import annotations

import pytest

import ember
from ember.callbacks import Callback
from tiny import TinyModel, make_loader, trainer_kwargs


class DM(ember.LightningDataModule):
    def __init__(self, batch_size: int = 8):
        super().__init__()
        self.save_hyperparameters()
        self.calls = []
        self.served = 0

    def prepare_data(self):
        self.calls.append("prepare_data")

    def setup(self, stage):
        self.calls.append(f"setup:{stage}")

    def teardown(self, stage):
        self.calls.append(f"teardown:{stage}")

    def train_dataloader(self):
        return make_loader(batch_size=self.hparams.batch_size)

    def val_dataloader(self):
        return make_loader(n=8, shuffle=False)

    def test_dataloader(self):
        return make_loader(n=16, shuffle=False)

    def on_batch(self):
        self.served += 1

    def state_dict(self):
        return {"served": self.served}

    def load_state_dict(self, state):
        self.served = state["served"]


class Count(Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        trainer.datamodule.on_batch()


class Summed(TinyModel):
    def test_step(self, batch, batch_idx):
        self.log("n", float(len(batch[0])), reduce_fx="sum")


def make_trainer(tmp_path, **kw):
    return ember.Trainer(**trainer_kwargs(tmp_path, **{"max_epochs": 1, **kw}))


def test_fit_and_test_with_a_datamodule_call_its_hooks_in_order(tmp_path):
    dm = DM(batch_size=4)
    t = make_trainer(tmp_path, checkpoint_callback=False)
    t.fit(Summed(), datamodule=dm)
    assert t.datamodule is dm and dm.trainer is t and t.global_step == 8
    assert dm.calls == ["prepare_data", "setup:fit", "teardown:fit"]
    assert t.test(datamodule=dm, verbose=False) == [{"n": 16.0}]
    assert dm.calls[3:] == ["prepare_data", "setup:test", "teardown:test"]


def test_a_datamodule_in_place_of_the_loaders(tmp_path):
    t = make_trainer(tmp_path, checkpoint_callback=False)
    t.fit(Summed(), DM())
    assert t.global_step == 4


def test_datamodule_state_and_hparams_are_in_the_checkpoint_under_lightnings_keys(tmp_path):
    t = make_trainer(tmp_path, callbacks=[Count()])
    dm = DM(batch_size=16)
    t.fit(Summed(), datamodule=dm)
    t.save_checkpoint(tmp_path / "dm.ckpt")
    ckpt = ember.load_checkpoint(tmp_path / "dm.ckpt")
    assert ckpt["DM"] == {"served": 2}
    assert ckpt["datamodule_hyper_parameters"] == {"batch_size": 16}
    again = DM(batch_size=16)
    make_trainer(tmp_path, max_epochs=2, callbacks=[Count()]).fit(Summed(), datamodule=again,
                                                                  ckpt_path=str(tmp_path / "dm.ckpt"))
    assert again.served == 4  # restored 2, then one more epoch of 2 batches


def test_the_modules_own_data_hooks_serve_every_stage(tmp_path):
    class Own(Summed):
        def __init__(self):
            super().__init__()
            self.stages = []

        def setup(self, stage):
            self.stages.append(stage)

        def train_dataloader(self):
            return make_loader()

        def test_dataloader(self):
            return make_loader(n=8)

    model = Own()
    t = make_trainer(tmp_path, checkpoint_callback=False)
    t.fit(model)
    assert t.test(model, verbose=False) == [{"n": 8.0}]
    assert model.stages == ["fit", "test"]


def test_missing_datamodule_loader_is_explained(tmp_path):
    class NoTest(DM):
        test_dataloader = ember.LightningDataModule.test_dataloader

    with pytest.raises(ember.MisconfigurationError, match="no data to test"):
        make_trainer(tmp_path).test(Summed(), datamodule=NoTest())
    with pytest.raises(ember.MisconfigurationError, match="no test_dataloader"):
        NoTest().test_dataloader()


def test_from_datasets_and_reload_dataloaders(tmp_path):
    ds = make_loader().dataset
    dm = ember.DataModule.from_datasets(train_dataset=ds, batch_size=8)
    requested = []

    class Reloading(DM):
        def train_dataloader(self):
            requested.append(1)
            return make_loader()

    t = make_trainer(tmp_path, checkpoint_callback=False)
    t.fit(Summed(), datamodule=dm)
    assert t.global_step == 4
    make_trainer(tmp_path, max_epochs=3, checkpoint_callback=False, reload_dataloaders_every_n_epochs=1).fit(
        Summed(), datamodule=Reloading())
    assert len(requested) == 3
