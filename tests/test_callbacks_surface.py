"""EarlyStopping, LearningRateMonitor, TQDMProgressBar and ModelSummary, through real fits."""

from __future__ import annotations

import csv
import math

import pytest
import torch

import ember
from ember.callbacks import EarlyStopping, LearningRateMonitor, ModelSummary, TQDMProgressBar
from ember.errors import MisconfigurationError
from ember.loggers import CSVLogger
from tiny import TinyModel, make_loader


class Scripted(TinyModel):
    """Logs ``score`` = values[epoch] as the epoch's value."""

    def __init__(self, values=(1.0,), **kw):
        super().__init__(**kw)
        self.values = list(values)

    def training_step(self, batch, batch_idx):
        self.log("score", self.values[min(self.current_epoch, len(self.values) - 1)], on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)


def fit(root, model, callbacks, epochs=10, ckpt_path=None, **kw):
    kw = {"enable_progress_bar": False, "logger": False, **kw}
    trainer = ember.Trainer(default_root_dir=str(root), max_epochs=epochs, callbacks=callbacks, **kw)
    trainer.fit(model, make_loader(), ckpt_path=ckpt_path)
    return trainer


# ------------------------------------------------------------------ EarlyStopping
def test_early_stopping_stops_after_patience_checks_without_improvement(tmp_path):
    es = EarlyStopping("score", patience=2)
    trainer = fit(tmp_path, Scripted([3.0, 2.0, 2.0, 2.5, 1.0]), es)
    assert es.stopped_epoch == 3 and trainer.current_epoch == 4
    assert es.best_score == 2.0 and es.wait_count == 2


def test_min_delta_and_mode_max(tmp_path):
    es = EarlyStopping("score", mode="max", min_delta=0.5, patience=1)
    fit(tmp_path, Scripted([1.0, 1.4, 3.0]), es)
    assert es.stopped_epoch == 1 and es.best_score == 1.0  # +0.4 is not more than min_delta


@pytest.mark.parametrize("kwargs, values, epoch, reason", [
    ({"stopping_threshold": 0.5}, [2.0, 1.0, 0.4, 0.1], 2, "stopping threshold reached"),
    ({"divergence_threshold": 5.0}, [2.0, 1.0, 6.0, 0.1], 2, "divergence threshold reached"),
    ({}, [2.0, math.nan, 0.1], 1, "is not finite"),
])
def test_thresholds_and_non_finite_values_stop(tmp_path, kwargs, values, epoch, reason):
    es = EarlyStopping("score", patience=10, **kwargs)
    fit(tmp_path, Scripted(values), es)
    assert es.stopped_epoch == epoch and reason in es.stopping_reason_message


def test_a_missing_metric_raises_when_strict_and_warns_otherwise(tmp_path):
    with pytest.raises(RuntimeError, match=r"'nope', which was not logged; the logged metrics are \[.*'score'"):
        fit(tmp_path, Scripted(), EarlyStopping("nope"), epochs=1)
    with pytest.warns(UserWarning, match="'nope', which was not logged"):
        trainer = fit(tmp_path / "b", Scripted(), EarlyStopping("nope", strict=False), epochs=2)
    assert trainer.current_epoch == 2


def test_early_stopping_count_continues_after_a_resume(tmp_path):
    values = [1.0] * 10  # never improves after the first epoch
    first = EarlyStopping("score", patience=3)
    fit(tmp_path, Scripted(values), first, epochs=2)
    assert (first.wait_count, first.best_score) == (1, 1.0)
    resumed = EarlyStopping("score", patience=3)
    trainer = fit(tmp_path, Scripted(values), resumed, epochs=10, ckpt_path="last")
    assert resumed.stopped_epoch == 3 and trainer.current_epoch == 4  # a fresh count would stop at epoch 5
    ckpt = ember.load_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert ckpt["callbacks"]["EarlyStopping[score:min]"] == {
        "wait_count": 3, "stopped_epoch": 3, "best_score": 1.0, "patience": 3}


def test_bad_early_stopping_arguments_are_refused():
    with pytest.raises(MisconfigurationError, match="mode must be 'min' or 'max'; received 'up'"):
        EarlyStopping("x", mode="up")


# ------------------------------------------------------------------ LearningRateMonitor
def test_lr_monitor_logs_each_epoch_scheduler_value_to_the_logger(tmp_path):
    lr = LearningRateMonitor()
    fit(tmp_path, TinyModel(lr=0.08, scheduler="step"), lr, epochs=3, logger=CSVLogger(tmp_path))
    assert lr.lrs["lr-Adam"] == pytest.approx([0.08, 0.04, 0.02])
    rows = list(csv.DictReader(open(tmp_path / "lightning_logs/version_0/metrics.csv")))
    assert [float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")] == pytest.approx([0.08, 0.04, 0.02])


def test_lr_monitor_step_interval_groups_and_momentum(tmp_path):
    class TwoGroups(TinyModel):
        def configure_optimizers(self):
            return torch.optim.SGD([{"params": self.net[0].parameters()},
                                    {"params": self.net[2].parameters(), "lr": 0.01}], lr=0.1, momentum=0.9)

    lr = LearningRateMonitor(logging_interval="step", log_momentum=True)
    fit(tmp_path, TwoGroups(), lr, epochs=1, logger=CSVLogger(tmp_path), log_every_n_steps=2)
    assert set(lr.lrs) == {"lr-SGD/pg1", "lr-SGD/pg2"}  # as Lightning: momentum in last_momentum_values
    assert lr.lrs["lr-SGD/pg2"] == [0.01, 0.01]  # Lightning's logging steps 1 and 3
    assert lr.last_momentum_values == {"lr-SGD/pg1-momentum": 0.9, "lr-SGD/pg2-momentum": 0.9}


def test_lr_monitor_needs_a_logger(tmp_path):
    with pytest.raises(MisconfigurationError, match="LearningRateMonitor needs a logger"):
        fit(tmp_path, TinyModel(), LearningRateMonitor(), epochs=1)


# ------------------------------------------------------------------ progress bar and summary
def test_tqdm_progress_bar_callback_replaces_the_built_in_bar(tmp_path, capsys):
    class Marked(TQDMProgressBar):
        def get_metrics(self, trainer, module):
            return {**super().get_metrics(trainer, module), "marker": 7}

    fit(tmp_path, TinyModel(), Marked(refresh_rate=0), epochs=1, enable_progress_bar=True)
    assert capsys.readouterr().err == ""  # refresh_rate=0: no bar, and the Trainer's own is off
    fit(tmp_path / "b", TinyModel(), Marked(refresh_rate=2, leave=True), epochs=1, enable_progress_bar=True)
    err = capsys.readouterr().err
    assert "Epoch 0" in err and "marker=7" in err and "loss=" in err and "4/4" in err


def test_model_summary_callback_prints_the_table_at_fit_start(tmp_path, capsys):
    fit(tmp_path, TinyModel(), ModelSummary(max_depth=2), epochs=1)
    out = capsys.readouterr().out
    assert "| net   | Sequential | 23     | train" in out and "| net.0 | Linear" in out
    assert "23        Total params" in out
    with pytest.raises(ValueError, match="max_depth must be an int >= -1"):
        ModelSummary(max_depth=-2)


def test_with_validation_every_other_epoch_early_stopping_checks_after_each_validation(tmp_path):
    class Val(TinyModel):
        def validation_step(self, batch, batch_idx):
            self.log("v", 1.0)

    es = EarlyStopping("v", patience=2)
    trainer = ember.Trainer(default_root_dir=str(tmp_path), max_epochs=20, callbacks=[es], enable_progress_bar=False,
                            logger=False, check_val_every_n_epoch=2)
    trainer.fit(Val(), make_loader(), make_loader(n=8))
    assert es.stopped_epoch == 5  # validations after epochs 1, 3, 5: best, wait 1, wait 2


def test_early_stopping_ignores_the_sanity_check_and_validate_outside_fit(tmp_path):
    class Worse(TinyModel):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(self.current_epoch))  # only gets worse: each check during fit waits

    es = EarlyStopping("v", patience=5)
    trainer = ember.Trainer(default_root_dir=str(tmp_path), max_epochs=2, callbacks=[es], enable_progress_bar=False,
                            logger=False)
    model = Worse()
    trainer.fit(model, make_loader(), make_loader(n=8))  # the sanity check's value (epoch 0) is not a check
    assert (es.best_score, es.wait_count) == (0.0, 1)
    trainer.validate(model, make_loader(n=8), verbose=False)
    assert es.wait_count == 1
