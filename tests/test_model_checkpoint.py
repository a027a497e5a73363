"""ModelCheckpoint: naming, top-k over epochs, last.ckpt, and what bookkeeping may delete."""

from __future__ import annotations

import os

import pytest
import torch

import ember
from ember.callbacks import ModelCheckpoint
from tiny import TinyModel, make_loader, trainer_kwargs


class Scripted(TinyModel):
    """Logs a scripted 'score' at each validation: scores[current_epoch]."""

    def __init__(self, scores=(5.0, 3.0, 4.0, 1.0, 2.0), **kw):
        super().__init__(**kw)
        self.scores = list(scores)

    def validation_step(self, batch, batch_idx):
        self.log("score", self.scores[self.current_epoch])


def fit(tmp_path, callback, epochs=5, model=None, **kw):
    trainer = ember.Trainer(max_epochs=epochs, checkpoint_callback=callback, **trainer_kwargs(tmp_path, **kw))
    trainer.fit(model or Scripted(), make_loader(), make_loader(n=8, shuffle=False))
    return trainer


def names(folder):
    return sorted(p.name for p in folder.glob("*.ckpt"))


def test_default_callback_keeps_only_the_latest_epoch(tmp_path):
    trainer = ember.Trainer(max_epochs=3, **trainer_kwargs(tmp_path))
    trainer.fit(TinyModel(), make_loader())
    assert names(tmp_path / "checkpoints") == ["epoch=2-step=12.ckpt"]
    assert trainer.checkpoint_callback.best_model_path.endswith("epoch=2-step=12.ckpt")


def test_top_k_keeps_the_k_best_over_epochs_min(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}-{score:.0f}", monitor="score", save_top_k=2)
    fit(tmp_path, cb)
    assert names(tmp_path / "c") == ["epoch=3-score=1.ckpt", "epoch=4-score=2.ckpt"]
    assert cb.best_model_score == 1.0 and cb.best_model_path.endswith("epoch=3-score=1.ckpt")
    assert cb.kth_best_model_path.endswith("epoch=4-score=2.ckpt") and cb.kth_value == 2.0
    assert sorted(cb.best_k_models.values()) == [1.0, 2.0]


def test_top_k_mode_max(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}", monitor="score", mode="max", save_top_k=1)
    fit(tmp_path, cb)
    assert names(tmp_path / "c") == ["epoch=0.ckpt"]


def test_save_top_k_minus_one_keeps_every_checkpoint(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="score", save_top_k=-1)
    fit(tmp_path, cb)
    assert len(names(tmp_path / "c")) == 5


def test_save_top_k_zero_with_save_last_writes_only_last(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="score", save_top_k=0, save_last=True)
    fit(tmp_path, cb, epochs=2)
    assert names(tmp_path / "c") == ["last.ckpt"]


def test_save_last_is_a_real_file_holding_the_newest_state(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="score", save_top_k=1, save_last=True)
    trainer = fit(tmp_path, cb)
    last = tmp_path / "c" / "last.ckpt"
    assert last.is_file() and not last.is_symlink()
    assert ember.load_checkpoint(last)["global_step"] == trainer.global_step


def test_unlogged_monitor_lists_the_logged_metrics(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="val_acc")
    with pytest.raises(ember.MisconfigurationError,
                       match=r"no metric 'val_acc'.*\['epoch', 'score', 'step', 'train_loss'\]"):
        fit(tmp_path, cb, epochs=1)


def test_monitor_none_with_top_k_above_one_is_rejected():
    with pytest.raises(ember.MisconfigurationError, match="needs a monitor"):
        ModelCheckpoint(save_top_k=3)


def test_filepath_template_and_prefix(tmp_path):
    cb = ModelCheckpoint(filepath=str(tmp_path / "out" / "sample_{epoch:02d}"), prefix="run1",
                         monitor="score", save_top_k=1)
    fit(tmp_path, cb, epochs=2)
    assert names(tmp_path / "out") == ["run1-sample_epoch=01.ckpt"]


def test_filepath_folder(tmp_path):
    cb = ModelCheckpoint(filepath=str(tmp_path / "folder"))
    fit(tmp_path, cb, epochs=1)
    assert names(tmp_path / "folder") == ["epoch=0-step=4.ckpt"]


def test_every_n_epochs(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", every_n_epochs=2, save_top_k=-1)
    fit(tmp_path, cb, epochs=4)
    assert names(tmp_path / "c") == ["epoch=1-step=8.ckpt", "epoch=3-step=16.ckpt"]


def test_every_n_train_steps_saves_mid_epoch(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", every_n_train_steps=3, save_top_k=-1)
    fit(tmp_path, cb, epochs=2)
    assert names(tmp_path / "c") == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"]  # step 8 (the end) not due


def test_an_existing_file_of_the_same_name_is_not_overwritten(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "epoch=0-step=4.ckpt").write_bytes(b"someone else's file")
    fit(tmp_path, ModelCheckpoint(dirpath=folder), epochs=1)
    assert (folder / "epoch=0-step=4.ckpt").read_bytes() == b"someone else's file"
    assert names(folder) == ["epoch=0-step=4-v1.ckpt", "epoch=0-step=4.ckpt"]


def test_bookkeeping_never_deletes_files_from_an_earlier_run(tmp_path):
    folder = tmp_path / "c"
    fit(tmp_path, ModelCheckpoint(dirpath=folder, filename="{epoch}", monitor="score"), epochs=2)
    assert names(folder) == ["epoch=1.ckpt"]
    fit(tmp_path, ModelCheckpoint(dirpath=folder, filename="{epoch}", monitor="score"), epochs=4)
    assert "epoch=1.ckpt" in names(folder)  # the first run's file is left alone


def test_the_resumed_run_manages_the_files_it_wrote_before_the_resume(tmp_path):
    folder = tmp_path / "c"
    fit(tmp_path, ModelCheckpoint(dirpath=folder, filename="{epoch}", monitor="score"), epochs=2)
    resumed = folder / "epoch=1.ckpt"
    trainer = ember.Trainer(max_epochs=4, checkpoint_callback=ModelCheckpoint(dirpath=folder, filename="{epoch}",
                                                                             monitor="score"),
                            **trainer_kwargs(tmp_path))
    trainer.fit(Scripted(), make_loader(), make_loader(n=8, shuffle=False), ckpt_path=str(resumed))
    assert names(folder) == ["epoch=3.ckpt"]  # epoch=1 (score 3) was let go once epoch=3 (score 1) committed
    assert trainer.checkpoint_callback.best_model_path.endswith("epoch=3.ckpt")


def test_save_weights_only_writes_no_optimizer_state(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", save_weights_only=True)
    fit(tmp_path, cb, epochs=1)
    ckpt = ember.load_checkpoint(tmp_path / "c" / "epoch=0-step=4.ckpt")
    assert "optimizer_states" not in ckpt and "state_dict" in ckpt and ckpt["hyper_parameters"]["lr"] == 0.1


def test_training_stopped_by_max_steps_mid_epoch_is_saved(tmp_path):
    trainer = ember.Trainer(max_steps=6, **trainer_kwargs(tmp_path))
    trainer.fit(TinyModel(), make_loader())
    assert names(tmp_path / "checkpoints") == ["epoch=1-step=6.ckpt"]


def test_callback_state_is_in_the_checkpoint(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}", monitor="score", save_top_k=2)
    fit(tmp_path, cb, epochs=2)
    saved = ember.load_checkpoint(tmp_path / "c" / "epoch=1.ckpt")["callbacks"][cb.state_key]
    assert saved["best_model_score"] == 3.0
    assert sorted(saved["best_k_models"].values()) == [3.0, 5.0]


def test_verbose_reports_each_save(tmp_path, capsys):
    fit(tmp_path, ModelCheckpoint(dirpath=tmp_path / "c", monitor="score", verbose=True), epochs=2)
    out = capsys.readouterr().out
    assert "'score' reached 5.00000" in out and "'score' reached 3.00000" in out


def test_files_are_complete_checkpoints(tmp_path):
    fit(tmp_path, ModelCheckpoint(dirpath=tmp_path / "c"), epochs=1)
    ckpt = ember.load_checkpoint(tmp_path / "c" / "epoch=0-step=4.ckpt")
    assert {"epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers", "callbacks",
            "hyper_parameters", "ember_version"} <= set(ckpt)
    assert not any(name.endswith(".part") for name in os.listdir(tmp_path / "c"))
    assert isinstance(ckpt["state_dict"]["net.0.weight"], torch.Tensor)


def test_train_time_interval_saves_after_steps_once_the_time_has_passed(tmp_path):
    from datetime import timedelta

    cb = ModelCheckpoint(dirpath=tmp_path / "c", train_time_interval=timedelta(seconds=0), save_top_k=-1)
    fit(tmp_path, cb, epochs=1)
    assert names(tmp_path / "c") == [f"epoch=0-step={s}.ckpt" for s in range(1, 5)]


def test_schedules_compose(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", every_n_epochs=1, every_n_train_steps=3, save_top_k=-1)
    fit(tmp_path, cb, epochs=2)
    assert names(tmp_path / "c") == ["epoch=0-step=3.ckpt", "epoch=0-step=4.ckpt", "epoch=1-step=6.ckpt",
                                     "epoch=1-step=8.ckpt"]


def test_checking_for_a_non_empty_folder_closes_its_listing(tmp_path):
    import gc
    import warnings

    from ember.callbacks.model_checkpoint import _has_entries
    from ember.checkpoint.storage.locations import open_store

    (tmp_path / "a.ckpt").write_bytes(b"x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _has_entries(open_store(str(tmp_path)))
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
