"""A LightningDataModule's batch-transfer hooks, run under real Lightning and ember (``tests/parity.py``): the
datamodule has Lightning's defaults (an override may call ``super()``), and its override wins over the module's."""

from __future__ import annotations

import warnings

import pytest

import ember
import ember.loops.hooks
from parity import assert_same_run, classifier, loader, pl, run_both


def with_transfer_hooks(lib, module_too: bool = False):
    """A datamodule overriding the three transfer hooks through ``super()``; ``module_too``: the module overrides
    ``on_before_batch_transfer`` as well. Every call lands in ``model.calls``."""
    calls = []

    class Data(lib.LightningDataModule):
        def train_dataloader(self):
            return loader()

        def val_dataloader(self):
            return loader(16)

        def on_before_batch_transfer(self, batch, dataloader_idx):
            calls.append(("data:before", dataloader_idx))
            return super().on_before_batch_transfer(batch, dataloader_idx)

        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            calls.append(("data:to_device", str(device)))
            return super().transfer_batch_to_device(batch, device, dataloader_idx)

        def on_after_batch_transfer(self, batch, dataloader_idx):
            calls.append(("data:after", dataloader_idx))
            return super().on_after_batch_transfer(batch, dataloader_idx)

    model = classifier(lib)
    if module_too:
        class Module(type(model)):
            def on_before_batch_transfer(self, batch, dataloader_idx):
                calls.append(("module:before", dataloader_idx))
                return batch

        model = Module()
    model.calls = calls
    return model, {"datamodule": Data(), "train_dataloaders": None, "val_dataloaders": None}


def test_datamodule_transfer_hooks_can_call_super(tmp_path):
    lightning, ours = run_both(with_transfer_hooks, tmp_path)
    assert lightning.model.calls[:3] == [("data:before", 0), ("data:to_device", "cpu"), ("data:after", 0)]
    assert ours.model.calls == lightning.model.calls
    assert_same_run(lightning, ours)


def test_datamodule_transfer_override_wins_over_the_modules(tmp_path):
    lightning, ours = run_both(lambda lib: with_transfer_hooks(lib, module_too=True), tmp_path)
    assert not any(name.startswith("module:") for name, _ in lightning.model.calls)
    assert ours.model.calls == lightning.model.calls


@pytest.mark.parametrize("data_overrides", [True, False])
def test_datamodule_transfer_warns_which_override_is_used(tmp_path, data_overrides):
    """Lightning warns (once per process) when the module overrides a transfer hook and a datamodule is given."""
    from pytorch_lightning.trainer.connectors import data_connector

    texts = []
    for lib in (pl, ember):
        data_connector.warning_cache.clear()
        ember.loops.hooks._WARNED.clear()

        class Module(type(classifier(lib))):
            def on_after_batch_transfer(self, batch, dataloader_idx):
                return batch

        class Data(lib.LightningDataModule):
            def train_dataloader(self):
                return loader()

        if data_overrides:
            Data.on_after_batch_transfer = lambda self, batch, dataloader_idx: batch
        trainer = lib.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False, default_root_dir=str(tmp_path))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(Module(), datamodule=Data())
        texts.append([str(w.message) for w in caught if "overridden" in str(w.message)])
    assert len(texts[0]) == 1
    assert texts[1] == texts[0]
