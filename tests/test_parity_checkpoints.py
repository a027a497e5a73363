"""ModelCheckpoint under real Lightning and ember (the parity harness): which files a run leaves, and
that files of one name hold the same epoch, step and weights."""

from __future__ import annotations

import math
import os
import pickle
import warnings
from datetime import timedelta

import pytest
import torch

import ember
from parity import checkpoint_contents, checkpoint_files, classifier, loader, pl, run, run_with_checkpoints


@pytest.mark.parametrize("checkpoint_kw, trainer_kw", [
    ({"save_top_k": -1}, {}),
    ({"save_top_k": -1}, {"check_val_every_n_epoch": 2, "max_epochs": 4}),
    ({"save_top_k": -1}, {"val_check_interval": 0.5}),
    ({"save_top_k": -1, "every_n_epochs": 2}, {"max_epochs": 4}),
    ({"save_top_k": -1, "save_on_train_epoch_end": True}, {"val_check_interval": 0.5}),
    ({"monitor": "epoch", "mode": "max", "save_top_k": 2}, {"max_epochs": 3}),
    ({"monitor": "step", "save_top_k": 1}, {"max_epochs": 3}),
    ({"monitor": "val_loss", "save_top_k": 2, "save_last": True}, {"max_epochs": 3}),
    ({"save_top_k": -1}, {"check_val_every_n_epoch": None, "val_check_interval": 2}),
    ({"save_top_k": -1}, {"val_check_interval": "00:00:00:00", "max_epochs": 1}),
], ids=["every_epoch", "check_val_every_2", "val_twice_per_epoch", "every_n_epochs", "on_train_epoch_end",
        "monitor_epoch", "monitor_step", "top2_and_last", "across_epochs", "time_every_batch"])
def test_the_same_checkpoints_are_saved(tmp_path, checkpoint_kw, trainer_kw):
    theirs, ours = run_with_checkpoints(classifier, tmp_path, checkpoint_kw, **trainer_kw)
    assert theirs, "Lightning saved nothing: the case tests nothing"
    assert ours == theirs


def test_a_time_interval_without_validation_saves_at_no_epoch_end(tmp_path):
    theirs, ours = run_with_checkpoints(classifier, tmp_path, {"save_top_k": -1}, val_check_interval={"hours": 1},
                                        fit_kw={"val_dataloaders": None})
    assert theirs == []  # Lightning saves after validations only, and none runs
    assert ours == theirs  # (ember saved when training ended, and before that every epoch too)


def nan_after_first_epoch(lib):
    model = classifier(lib)

    def validation_step(batch, batch_idx):
        model.log("val_loss", float("nan") if model.current_epoch >= 1 else 1.0)

    model.validation_step = validation_step
    return model


def test_a_nan_monitor_value_is_never_best(tmp_path):
    theirs, ours = run_with_checkpoints(nan_after_first_epoch, tmp_path, {"monitor": "val_loss", "save_top_k": 1},
                                        max_epochs=3)
    assert ours == theirs == ["epoch=0-step=3.ckpt"]


def test_a_nan_first_value_is_saved_and_scored_as_the_worst(tmp_path):
    model = classifier(ember)
    model.validation_step = lambda batch, batch_idx: model.log("val_loss", float("nan"))
    cb = ember.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", monitor="val_loss")
    trainer = ember.Trainer(max_epochs=1, logger=False, callbacks=[cb], enable_progress_bar=False,
                            default_root_dir=str(tmp_path))
    from parity import loader
    trainer.fit(model, loader(), loader(16))
    assert cb.best_model_path.endswith("epoch=0-step=3.ckpt") and float(cb.best_model_score) == math.inf


def test_tilde_in_dirpath_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cb = ember.callbacks.ModelCheckpoint(dirpath="~/ckpts")
    assert cb.dirpath == str(tmp_path / "ckpts")


def test_model_checkpoint_pickles():
    cb = pickle.loads(pickle.dumps(ember.callbacks.ModelCheckpoint(monitor="val_loss", save_top_k=2)))
    assert (cb.monitor, cb.save_top_k) == ("val_loss", 2)


def _fit_failing_at_step_2(lib, folder, tmp_path, **checkpoint_kw):
    model = classifier(lib)
    step = model.training_step

    def failing(batch, batch_idx):
        if model.global_step == 2:
            raise RuntimeError("boom")
        return step(batch, batch_idx)

    model.training_step = failing
    cb = lib.callbacks.ModelCheckpoint(dirpath=str(folder), save_on_exception=True, **checkpoint_kw)
    trainer = lib.Trainer(max_epochs=1, logger=False, callbacks=[cb], enable_progress_bar=False,
                          default_root_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model, loader())
    return model


@pytest.mark.parametrize("checkpoint_kw", [{}, {"save_last": True}, {"filename": "exception"}],
                         ids=["template", "and_last", "fixed_name"])
def test_save_on_exception_writes_what_lightning_writes_before_the_error_goes_on(tmp_path, checkpoint_kw):
    names = {}
    for lib in (pl, ember):
        folder = tmp_path / lib.__name__
        model = _fit_failing_at_step_2(lib, folder, tmp_path, **checkpoint_kw)
        names[lib] = checkpoint_files(folder)
    assert names[pl] and names[ember] == names[pl]
    saved = next(n for n in names[ember] if not n.startswith("last"))
    ckpt = ember.load_checkpoint(tmp_path / "ember" / saved)
    assert ckpt["global_step"] == 2
    torch.testing.assert_close(ckpt["state_dict"]["layer.weight"], model.layer.weight)


@pytest.mark.parametrize("lib", [pl, ember], ids=["lightning", "ember"])
def test_a_second_fit_into_the_same_checkpoint_folder_warns_that_it_is_not_empty(tmp_path, lib):
    def fit():
        cb = lib.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "c"))
        trainer = lib.Trainer(max_epochs=1, logger=False, callbacks=[cb], enable_progress_bar=False,
                              enable_model_summary=False, default_root_dir=str(tmp_path))
        trainer.fit(classifier(lib), loader())

    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        fit()
    with pytest.warns(UserWarning, match="exists and is not empty"):
        fit()
    assert not [w for w in first if "not empty" in str(w.message)]


def test_current_score_and_to_yaml_match_lightning(tmp_path):
    import yaml

    seen = {}
    for lib in (pl, ember):
        folder = tmp_path / f"ckpt-{lib.__name__}"
        cb = lib.callbacks.ModelCheckpoint(dirpath=str(folder), monitor="val_loss", save_top_k=2)
        run(lib, classifier, tmp_path, enable_checkpointing=True, callbacks_extra=[cb], max_epochs=3)
        cb.to_yaml()
        written = yaml.safe_load((folder / "best_k_models.yaml").read_text())
        seen[lib] = (round(float(cb.current_score), 5),
                     {os.path.basename(k): round(v, 5) for k, v in written.items()})
    assert seen[ember] == seen[pl] and len(seen[pl][1]) == 2


# ---------------------------------------------------------------- the end of training between scheduled saves
def last_steps(tmp_path) -> list:
    """The global_step in each library's last.ckpt (None where there is none), Lightning's first. (Its ``epoch``
    differs once training has ended: Lightning stores current_epoch, max_epochs by then; ember its loop's epoch.)"""
    out = []
    for lib in (pl, ember):
        path = tmp_path / f"ckpt-{lib.__name__}" / "last.ckpt"
        out.append(checkpoint_contents(path)[1] if path.exists() else None)
    return out


@pytest.mark.parametrize(("checkpoint_kw", "trainer_kw", "expected"), [
    (dict(every_n_train_steps=2), dict(max_steps=5, max_epochs=-1), ["epoch=1-step=4.ckpt"]),
    (dict(every_n_train_steps=2, save_top_k=-1, save_last=True), dict(max_steps=5, max_epochs=-1),
     ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "last.ckpt"]),
    (dict(every_n_train_steps=4, save_top_k=-1), dict(max_epochs=1), []),
    (dict(every_n_epochs=2, save_top_k=-1), dict(max_epochs=3), ["epoch=1-step=6.ckpt"]),
    (dict(every_n_epochs=2, save_last=True), dict(max_epochs=3), ["epoch=1-step=6.ckpt", "last.ckpt"]),
    (dict(train_time_interval=timedelta(hours=1), save_top_k=-1), dict(max_epochs=2), []),
    (dict(train_time_interval=timedelta(hours=1), save_last=True), dict(max_epochs=2), ["last.ckpt"]),
], ids=["steps", "steps-last", "steps-never-due", "epochs", "epochs-last", "time", "time-last"])
def test_training_end_between_scheduled_saves_writes_no_extra_checkpoint(tmp_path, checkpoint_kw, trainer_kw,
                                                                          expected):
    """Lightning saves nothing for the steps after the last scheduled save; with save_last, last.ckpt holds the
    last scheduled save, or the end of training when nothing was saved at all."""
    lightning, ours = run_with_checkpoints(classifier, tmp_path, checkpoint_kw, **trainer_kw)
    assert lightning == expected
    assert ours == lightning
    lightning_last, our_last = last_steps(tmp_path)
    assert our_last == lightning_last
