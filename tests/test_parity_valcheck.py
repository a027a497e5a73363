"""When fit validates (``val_check_interval``, ``check_val_every_n_epoch``), run under real Lightning and ember
through the parity harness (``tests/parity.py``): the (epoch, global_step) of every validation must agree.

The harness trains 3 batches per epoch and validates on 2. Time-based intervals read a fake clock that each
training step advances by one second (both libraries' clocks are patched), so nothing depends on the machine's
speed; one test uses the real clock with steps that sleep longer than the interval."""

from __future__ import annotations

import functools
import time
import types
from datetime import timedelta

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

import ember
import ember.utilities.exceptions  # noqa: F401 - lib.utilities.exceptions below
from parity import classifier, loader, pl, run, run_both


class Clock:
    """A fake ``time.monotonic``: one second passes per training step."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("ember.loops.valcheck.monotonic", fake)
    for module in ("training_epoch_loop", "fit_loop", "evaluation_loop"):  # Lightning reads time.monotonic() there
        monkeypatch.setattr(f"pytorch_lightning.loops.{module}.time", types.SimpleNamespace(monotonic=fake))
    return fake


def recording(lib, clock: Clock | None = None, sleep_s: float = 0.0, stop_after: int | None = None,
              skip_batch: int | None = None):
    """The harness's classifier, noting (current_epoch, global_step) after every validation (sanity check aside)
    in ``model.validated``. Each training step advances ``clock`` by 1 s or sleeps ``sleep_s``; ``stop_after``:
    ``should_stop`` after that many batches; ``skip_batch``: epoch 0's batch of that index ends the epoch (-1)."""
    base = type(classifier(lib))

    class Recording(base):
        def __init__(self):
            super().__init__()
            self.validated = []

        def training_step(self, batch, batch_idx):
            if clock is not None:
                clock.now += 1.0
            if sleep_s:
                time.sleep(sleep_s)
            return super().training_step(batch, batch_idx)

        def on_train_batch_start(self, batch, batch_idx):
            return -1 if (self.current_epoch, batch_idx) == (0, skip_batch) else None

        def on_train_batch_end(self, outputs, batch, batch_idx):
            if stop_after is not None and self.global_step >= stop_after:
                self.trainer.should_stop = True

        def on_validation_end(self):
            if not self.trainer.sanity_checking:
                self.validated.append((self.current_epoch, self.global_step))

    return Recording()


def validations(program=recording, tmp_path=None, **kw) -> list:
    """Both libraries' validation points for ``program`` (asserted equal), Lightning's returned."""
    lightning, ours = run_both(program, tmp_path, **kw)
    assert ours.model.validated == lightning.model.validated
    return lightning.model.validated


class Stream(IterableDataset):
    """``n`` samples and no length: an epoch ends when the iterator does."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        x = torch.randn(self.n, 4, generator=torch.Generator().manual_seed(1))
        return iter([(row, (row.sum() > 0).long()) for row in x])


def stream(n: int = 24) -> DataLoader:
    return DataLoader(Stream(n), batch_size=8)


# ---------------------------------------------------------------- check_val_every_n_epoch=None
def test_check_val_every_n_epoch_none_counts_batches_across_epochs(tmp_path):
    got = validations(tmp_path=tmp_path, check_val_every_n_epoch=None, val_check_interval=2, max_epochs=2)
    assert got == [(0, 2), (1, 4), (1, 6)]


def test_check_val_every_n_epoch_none_allows_an_interval_longer_than_an_epoch(tmp_path):
    got = validations(tmp_path=tmp_path, check_val_every_n_epoch=None, val_check_interval=5, max_epochs=4)
    assert got == [(1, 5), (3, 10)]


def test_check_val_every_n_epoch_none_works_with_a_loader_without_length(tmp_path):
    got = validations(tmp_path=tmp_path, check_val_every_n_epoch=None, val_check_interval=4, max_epochs=3,
                      fit_kw={"train_dataloaders": stream()})
    assert got == [(1, 4), (2, 8)]


def test_check_val_every_n_epoch_none_alone_validates_every_epochs_worth_of_batches(tmp_path):
    assert validations(tmp_path=tmp_path, check_val_every_n_epoch=None) == [(0, 3), (1, 6)]


@pytest.mark.parametrize("interval", [0.5, 1.0])
def test_a_fraction_with_check_val_every_n_epoch_none_is_refused(interval):
    for lib in (pl, ember):
        with pytest.raises(lib.utilities.exceptions.MisconfigurationException, match="check_val_every_n_epoch"):
            lib.Trainer(logger=False, check_val_every_n_epoch=None, val_check_interval=interval)


# ---------------------------------------------------------------- batch intervals
def test_an_int_interval_longer_than_an_epoch_is_refused_at_fit(tmp_path):
    for lib in (pl, ember):
        with pytest.raises(ValueError, match="val_check_interval") as info:  # Lightning's: a ValueError
            run(lib, recording, tmp_path, val_check_interval=4)
    assert isinstance(info.value, ember.MisconfigurationError) and "check_val_every_n_epoch=None" in str(info.value)


def test_an_int_interval_longer_than_an_epoch_is_allowed_without_validation(tmp_path):
    assert validations(tmp_path=tmp_path, val_check_interval=4, limit_val_batches=0) == []


def test_a_whole_float_interval_counts_batches_and_zero_validates_after_every_batch(tmp_path):
    assert validations(tmp_path=tmp_path, val_check_interval=2.0, max_epochs=1) == [(0, 2)]
    assert validations(tmp_path=tmp_path, val_check_interval=0.0, max_epochs=1) == [(0, 1), (0, 2), (0, 3)]


def test_a_fraction_with_a_loader_without_length_is_refused(tmp_path):
    for lib in (pl, ember):
        with pytest.raises(lib.utilities.exceptions.MisconfigurationException, match="val_check_interval"):
            run(lib, recording, tmp_path, val_check_interval=0.5, fit_kw={"train_dataloaders": stream()})


def test_a_loader_without_length_validates_once_after_a_last_batch_on_the_interval(tmp_path):
    got = validations(tmp_path=tmp_path, val_check_interval=2, max_epochs=1, fit_kw={"train_dataloaders": stream(32)})
    assert got == [(0, 2), (0, 4)]  # ember used to validate twice after batch 4, the last


def test_an_epoch_ended_by_on_train_batch_start_does_not_validate(tmp_path):
    assert validations(functools.partial(recording, skip_batch=1), tmp_path) == [(1, 4)]


def test_a_stop_at_an_epochs_last_batch_validates_first(tmp_path):
    got = validations(functools.partial(recording, stop_after=3), tmp_path, val_check_interval=2, max_epochs=3)
    assert got == [(0, 2), (0, 3)]


def test_no_training_batches_means_no_validation(tmp_path):
    assert validations(tmp_path=tmp_path, limit_train_batches=0) == []


# ---------------------------------------------------------------- time intervals
@pytest.mark.parametrize("interval", ["00:00:00:02", "0:0:0:2", {"seconds": 2}, timedelta(seconds=2)],
                         ids=["string", "short_string", "dict", "timedelta"])
def test_a_time_interval_validates_once_it_has_passed_since_the_last_validation(tmp_path, clock, interval):
    got = validations(functools.partial(recording, clock=clock), tmp_path, val_check_interval=interval)
    assert got == [(0, 2), (1, 4), (1, 6)]  # not at the end of epoch 0: 1 s had passed there


def test_a_time_interval_with_check_val_every_n_epoch_waits_for_a_validating_epoch(tmp_path, clock):
    got = validations(functools.partial(recording, clock=clock), tmp_path, val_check_interval={"seconds": 2},
                      check_val_every_n_epoch=2, max_epochs=4)
    assert got == [(1, 4), (1, 6), (3, 10), (3, 12)]  # the first batch of epoch 1 and 3, time being up by then


def test_a_time_interval_with_check_val_every_n_epoch_none(tmp_path, clock):
    got = validations(functools.partial(recording, clock=clock), tmp_path, val_check_interval={"seconds": 3},
                      check_val_every_n_epoch=None)
    assert got == [(0, 3), (1, 6)]


def test_a_time_interval_on_the_real_clock(tmp_path):
    every_batch = validations(functools.partial(recording, sleep_s=0.015), tmp_path, max_epochs=1,
                              val_check_interval=timedelta(milliseconds=10))
    assert every_batch == [(0, 1), (0, 2), (0, 3)]  # each step sleeps longer than the interval
    assert validations(tmp_path=tmp_path, val_check_interval="01:00:00:00") == []  # not even at an epoch's end


@pytest.mark.parametrize("bad", ["1:2:3", "a:b:c:d", "-1:00:00:00", {"minutes": 5, "fortnights": 1},
                                 timedelta(seconds=-1), [1]])
def test_a_bad_time_interval_is_refused_saying_what_is_expected(bad):
    with pytest.raises(ember.MisconfigurationError, match="received") as info:
        ember.Trainer(logger=False, val_check_interval=bad)
    assert "DD:HH:MM:SS" in str(info.value)


# ---------------------------------------------------------------- what the Trainer tells
@pytest.mark.parametrize("kw", [{}, {"val_check_interval": None}, {"val_check_interval": 2.0},
                                {"val_check_interval": 0.5}, {"check_val_every_n_epoch": None, "val_check_interval": 5},
                                {"val_check_interval": {"minutes": 5}}, {"limit_train_batches": 2}],
                         ids=["default", "none", "whole_float", "fraction", "across_epochs", "time", "limit"])
def test_the_trainer_attributes_agree(tmp_path, kw):
    lightning, ours = run_both(recording, tmp_path, max_epochs=1, **kw)
    names = ["check_val_every_n_epoch", "val_check_batch", "limit_train_batches", "limit_val_batches",
             "limit_test_batches", "limit_predict_batches", "num_training_batches"]
    if "minutes" not in str(kw):  # Lightning leaves trainer.val_check_interval unset with a time interval
        names.append("val_check_interval")
    assert {n: getattr(ours.trainer, n) for n in names} == {n: getattr(lightning.trainer, n) for n in names}
    assert ember.Trainer(logger=False, **kw).val_check_batch is None  # set when fit starts, as Lightning's


def test_progress_bar_totals_follow_check_val_every_n_epoch(tmp_path):
    seen = {}
    for lib in (pl, ember):
        class Bar(lib.callbacks.TQDMProgressBar):
            def on_train_epoch_start(self, trainer, module):
                seen.setdefault(lib.__name__, []).append((self.total_train_batches, self.total_val_batches))

        bar = Bar(refresh_rate=0)
        run(lib, recording, tmp_path, max_epochs=4, check_val_every_n_epoch=2, enable_progress_bar=True,
            callbacks_extra=[bar])
    assert seen["ember"] == seen["pytorch_lightning"] == [(3, 0), (3, 2), (3, 0), (3, 2)]


# ---------------------------------------------------------------- ember only
def test_a_resumed_run_counts_batches_across_epochs_from_where_it_stopped(tmp_path):
    def fit(max_epochs, ckpt_path=None, root="whole"):
        torch.manual_seed(0)
        model = recording(ember)
        trainer = ember.Trainer(max_epochs=max_epochs, check_val_every_n_epoch=None, val_check_interval=2,
                                logger=False, enable_progress_bar=False, enable_model_summary=False,
                                default_root_dir=str(tmp_path / root), num_sanity_val_steps=0)
        trainer.fit(model, loader(), loader(16), ckpt_path=ckpt_path)
        return trainer, model

    whole = fit(3)[1].validated
    first, _ = fit(1, root="first")
    resumed = fit(3, first.checkpoint_callback.best_model_path, root="resumed")[1]
    assert whole == [(0, 2), (1, 4), (1, 6), (2, 8)]
    assert resumed.validated == whole[1:]


def test_early_stopping_with_a_time_interval_checks_after_each_validation(tmp_path, clock):
    # Lightning 2.6.6's EarlyStopping raises AttributeError here (it reads trainer.val_check_interval, left unset)
    class Constant(type(recording(ember, clock=clock))):
        def validation_step(self, batch, batch_idx):
            self.log("constant", 1.0)  # never improves after the first check: the second one stops

    stopper = ember.callbacks.EarlyStopping("constant", patience=0)
    out = run(ember, lambda lib: Constant(), tmp_path, val_check_interval={"seconds": 2}, max_epochs=5,
              callbacks_extra=[stopper])
    assert out.model.validated == [(0, 2), (1, 4)]  # checked at epoch ends instead, it would stop at step 6
    assert out.global_step == 4
