"""When/keep policies and file-name templates: pure functions."""

from __future__ import annotations

import math
import re

import pytest

import ember

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


def records(*scores):
    return [policies.Record(f"c{i}", epoch=i, global_step=i + 1, score=s) for i, s in enumerate(scores)]


@pytest.mark.parametrize("mode, expected", [("min", [False, True, True]), ("max", [True, False, True])])
def test_best_k_keeps_the_best(mode, expected):
    assert policies.BestK(2, mode).keep(records(3.0, 1.0, 2.0)) == expected


@pytest.mark.parametrize("mode", ["min", "max"])
def test_best_k_ranks_nan_last(mode):
    assert policies.BestK(1, mode).keep(records(math.nan, 5.0)) == [False, True]


def test_best_k_ties_keep_the_earlier_checkpoint():
    assert policies.BestK(1, "min").keep(records(1.0, 1.0)) == [True, False]


def test_best_k_minus_one_keeps_all():
    assert policies.BestK(-1, "min").keep(records(1.0, 2.0)) == [True, True]


@pytest.mark.parametrize("n, expected", [(0, [False] * 3), (1, [False, False, True]), (2, [False, True, True]),
                                         (-1, [True] * 3)])
def test_latest_n_keeps_the_newest(n, expected):
    assert policies.LatestN(n).keep(records(None, None, None)) == expected


def test_milestones_keep_every_nth_step_for_good():
    assert policies.EveryNStepsForGood(2).keep(records(1.0, 2.0, 3.0, 4.0)) == [False, True, False, True]


def test_keep_policies_compose_as_a_union():
    recs = records(5.0, 1.0, 4.0, 3.0)
    assert policies.kept(recs, [policies.BestK(1, "min"), policies.EveryNStepsForGood(4)]) == [False, True, False, True]


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


@pytest.mark.parametrize("name", ["val/loss", "a\\b", "x\x1by"])
def test_format_filename_keeps_metric_names_with_separators_inside_the_folder(name):
    out = policies.format_filename("{epoch}-{%s:.2f}" % name, {"epoch": 1, name: 0.5})
    assert "/" not in out and "\\" not in out and "\x1b" not in out and out.endswith("=0.50")


@pytest.mark.parametrize("template", ["/abs/{epoch}", "sub/{epoch}", "../{epoch}", "..", "\\x{epoch}"])
def test_templates_that_leave_the_folder_are_refused_naming_the_template(template):
    with pytest.raises(ember.MisconfigurationError, match=re.escape(repr(template))):
        policies.check_template(template)
