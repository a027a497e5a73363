"""One load pipeline (``checkpoint/resume.py``): fit, validate/test/predict and ``load_from_checkpoint`` resolve
every kind of location to the same checkpoint and load the same weights from it."""

from __future__ import annotations

import pytest
import torch

import ember
from ember.callbacks import ModelCheckpoint
from ember.checkpoint.lightning import to_lightning
from ember.checkpoint.sharded import save_sharded
from ember.errors import CheckpointNotFoundError, MisconfigurationError
from tiny import TinyModel, make_loader, trainer_kwargs



class EvalModel(TinyModel):
    """The tiny classifier with a test and a predict step, so every entry point can run it."""

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        return self(batch[0])


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished fit (2 epochs, a monitored top-1 and last.ckpt) and the checkpoints every kind of location
    names, each holding the weights of epoch 2 (what "last" and "best" find too)."""
    root = tmp_path_factory.mktemp("run")
    cb = ModelCheckpoint(monitor="train_loss", mode="max", save_top_k=1, save_last=True)
    trainer = ember.Trainer(max_epochs=2, callbacks=[cb], **trainer_kwargs(root))
    model = TinyModel()
    trainer.fit(model, make_loader(), make_loader(shuffle=False))
    final = ember.load_checkpoint(cb.last_model_path)
    places = {"path": cb.last_model_path}
    save_sharded(final, root / "sharded.ckpt")
    places["sharded folder"] = str(root / "sharded.ckpt")
    ember.save_checkpoint(final, root / "hpc_ckpt_3.ckpt")
    ember.save_checkpoint({**final, "global_step": 0}, root / "hpc_ckpt_1.ckpt")
    ember.save_checkpoint(final, "memory://pipeline/url.ckpt")
    places["url"] = "memory://pipeline/url.ckpt"
    lightning_file = root / "lightning.ckpt"
    torch.save(to_lightning(final), lightning_file)  # a full Lightning checkpoint, as Lightning writes one
    places["lightning file"] = str(lightning_file)
    torch.save({"state_dict": final["state_dict"]}, root / "torch.ckpt")
    places["torch file"] = str(root / "torch.ckpt")
    return trainer, cb, model, places, root


def _evaluated_weights(trainer, stage, ckpt_path):
    fresh = EvalModel()
    loader = make_loader(shuffle=False)
    getattr(trainer, stage)(fresh, loader, ckpt_path=ckpt_path, **({} if stage == "predict" else {"verbose": False}))
    return _weights(fresh), trainer.ckpt_path


@pytest.mark.parametrize("kind", ["path", "url", "sharded folder", "lightning file", "torch file"])
@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_evaluation_and_load_from_checkpoint_load_the_same_weights_from_each_kind_of_location(run, kind, stage):
    trainer, _, model, places, _ = run
    weights, used = _evaluated_weights(trainer, stage, places[kind])
    assert used == places[kind]
    assert _same(weights, _weights(model))
    assert _same(_weights(TinyModel.load_from_checkpoint(places[kind])), weights)


@pytest.mark.parametrize("keyword", ["last", "best"])
@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_last_and_best_name_the_same_file_for_evaluation_as_for_the_callback(run, keyword, stage):
    trainer, cb, model, _, _ = run
    expected = cb.last_model_path if keyword == "last" else cb.best_model_path
    weights, used = _evaluated_weights(trainer, stage, keyword)
    assert used == expected
    if keyword == "last":
        assert _same(weights, _weights(model))


def test_fit_resolves_last_to_the_file_evaluation_resolves(run, tmp_path):
    trainer, cb, _, _, root = run
    _evaluated_weights(trainer, "validate", "last")
    evaluated = trainer.ckpt_path
    again = ember.Trainer(max_epochs=3, callbacks=[ModelCheckpoint(save_last=True)], **trainer_kwargs(root))
    again.fit(TinyModel(), make_loader(), ckpt_path="last")
    assert again.ckpt_path == evaluated == cb.last_model_path


def test_hpc_names_the_highest_numbered_hpc_checkpoint_in_the_root_folder(run):
    trainer, _, _, _, root = run
    _evaluated_weights(trainer, "validate", "hpc")
    assert trainer.ckpt_path == str(root / "hpc_ckpt_3.ckpt")


@pytest.mark.parametrize("kind", ["path", "sharded folder", "lightning file"])
def test_fit_resumes_at_the_same_step_from_each_kind_of_location(run, tmp_path, kind):
    trainer, _, _, places, _ = run
    resumed = ember.Trainer(max_epochs=3, **trainer_kwargs(tmp_path))
    resumed.fit(TinyModel(), make_loader(), ckpt_path=places[kind])
    assert resumed.ckpt_path == places[kind]
    assert resumed.global_step == trainer.global_step + len(make_loader())


@pytest.mark.parametrize("entry", ["fit", "validate", "load_from_checkpoint"])
def test_a_missing_path_is_a_file_not_found_error_at_every_entry_point(tmp_path, entry):
    missing = str(tmp_path / "nope.ckpt")
    trainer = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such file") as info:
        if entry == "load_from_checkpoint":
            TinyModel.load_from_checkpoint(missing)
        else:
            getattr(trainer, entry)(TinyModel(), make_loader(), ckpt_path=missing)
    assert isinstance(info.value, CheckpointNotFoundError)


@pytest.mark.parametrize("stage", ["fit", "validate"])
def test_last_with_nothing_saved_warns_and_loads_nothing_at_every_entry_point(tmp_path, stage):
    trainer = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    with pytest.warns(UserWarning, match=rf"{stage}\(ckpt_path='last'\) found no checkpoint"):
        getattr(trainer, stage)(TinyModel(), make_loader(), ckpt_path="last")
    assert trainer.ckpt_path is None


@pytest.mark.parametrize("stage", ["fit", "validate"])
def test_best_without_a_saved_checkpoint_is_refused_at_every_entry_point(tmp_path, stage):
    trainer = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    with pytest.raises(MisconfigurationError, match=r"ckpt_path='best'\): the ModelCheckpoint has saved no"):
        getattr(trainer, stage)(TinyModel(), make_loader(), ckpt_path="best")


def test_best_without_a_monitor_is_the_newest_checkpoint_as_in_lightning(tmp_path):
    cb = ModelCheckpoint(save_top_k=1)
    trainer = ember.Trainer(max_epochs=2, callbacks=[cb], **trainer_kwargs(tmp_path))
    trainer.fit(TinyModel(), make_loader())
    trainer.validate(TinyModel(), make_loader(), ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == cb.best_model_path and "epoch=1" in cb.best_model_path
