"""When/keep policies and file-name templates: pure functions."""

from __future__ import annotations

import math

import pytest

from ember.checkpoint import policies
from ember.checkpoint.policies import SavePoint


def point(epoch=0, step=0, epoch_end=False, now=0.0, last=0.0):
    return SavePoint(epoch=epoch, global_step=step, epoch_end=epoch_end, now=now, last_save_time=last)


@pytest.mark.parametrize("epoch, due", [(0, False), (1, True), (2, False), (3, True)])
def test_every_n_epochs_is_due_at_the_end_of_every_nth_epoch(epoch, due):
    assert policies.EveryNEpochs(2).due(point(epoch=epoch, epoch_end=True)) is due


def test_every_n_epochs_is_not_due_mid_epoch():
    assert not policies.EveryNEpochs(1).due(point(epoch=0, epoch_end=False))


@pytest.mark.parametrize("step, due", [(0, False), (3, True), (4, False), (6, True)])
def test_every_n_steps(step, due):
    assert policies.EveryNSteps(3).due(point(step=step)) is due


def test_every_interval_waits_for_the_time():
    p = policies.EveryInterval(10.0)
    assert not p.due(point(now=9.0, last=0.0)) and p.due(point(now=10.0, last=0.0))


@pytest.mark.parametrize("mode, expected", [("min", ["b", "c"]), ("max", ["a", "c"])])
def test_top_k_keeps_the_best(mode, expected):
    assert policies.top_k({"a": 3.0, "b": 1.0, "c": 2.0}, 2, mode) == expected


def test_top_k_ranks_nan_last():
    assert policies.top_k({"a": math.nan, "b": 5.0}, 1, "min") == ["b"]
    assert policies.top_k({"a": math.nan, "b": 5.0}, 1, "max") == ["b"]


def test_top_k_minus_one_keeps_all():
    assert len(policies.top_k({"a": 1.0, "b": 2.0}, -1, "min")) == 2


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{epoch}-{step}", "epoch=3-step=40"),
        ("{epoch:02d}-{val_loss:.2f}", "epoch=03-val_loss=0.12"),
        ("best", "best"),
        ("{missing}", "missing=nan"),
    ],
)
def test_format_filename(template, expected):
    assert policies.format_filename(template, {"epoch": 3, "step": 40, "val_loss": 0.123}) == expected


def test_format_filename_without_metric_names():
    assert policies.format_filename("{epoch}", {"epoch": 1}, auto_insert_metric_name=False) == "1"
