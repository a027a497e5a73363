"""The run's Stateful parts and the one adapter to the checkpoint dict."""

from __future__ import annotations

import ember
from ember.checkpoint.state import Stateful
from tiny import TinyModel, make_loader, trainer_kwargs


def fitted(tmp_path, **kw):
    trainer = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path, **kw))
    trainer.fit(TinyModel(scheduler="step"), make_loader())
    return trainer


def test_every_part_of_a_run_is_a_named_stateful(tmp_path):
    parts = fitted(tmp_path, precision="16-mixed")._run.parts()
    assert set(parts) == {"model", "loop", "optimizer.0", "lr_scheduler.0", "precision", "callback.ModelCheckpoint"}
    assert all(isinstance(p, Stateful) for p in parts.values())


def test_epoch_and_global_step_are_stored_once(tmp_path):
    ckpt = fitted(tmp_path).dump_checkpoint()
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, 4)
    assert not {"epoch", "global_step", "rng"} & set(ckpt["loops"]["fit"])
