"""Trainer flags and behaviours, each run under real Lightning and ember through the parity harness
(``tests/parity.py``): the same program, compared hook by hook, metric by metric, step by step."""

from __future__ import annotations

import pytest
import torch

from parity import assert_same_run, classifier, loader, run_both


def test_a_plain_fit_agrees_in_hooks_metrics_logged_steps_and_weights(tmp_path):
    assert_same_run(*run_both(classifier, tmp_path))


def test_log_every_n_steps_logs_at_the_same_steps(tmp_path):
    lightning, ours = run_both(classifier, tmp_path, log_every_n_steps=2, max_epochs=3)
    assert [s for s, _ in ours.logged] == [s for s, _ in lightning.logged]
    assert_same_run(lightning, ours)


def test_sanity_values_are_in_callback_metrics_until_training_starts(tmp_path):
    lightning, ours = run_both(classifier, tmp_path, num_sanity_val_steps=1)
    sanity_end = [h for h in lightning.hooks if h[0] == "on_validation_end" and h[1]]
    assert sanity_end and sanity_end[0][2] == ["val_loss"]  # what Lightning does, pinned
    assert ours.hooks == lightning.hooks


def test_max_steps_mid_epoch_leaves_the_same_current_epoch(tmp_path):
    lightning, ours = run_both(classifier, tmp_path, max_steps=2)
    assert lightning.current_epoch == 1
    assert_same_run(lightning, ours)


def test_overfit_batches_trains_on_the_same_first_batches(tmp_path):
    shuffled = {"train_dataloaders": loader(shuffle=True)}
    lightning, ours = run_both(classifier, tmp_path, overfit_batches=2, fit_kw=shuffled)
    assert lightning.global_step == 4
    assert_same_run(lightning, ours)


def test_max_time_stops_training_like_lightning(tmp_path):
    def slow(lib):
        model = classifier(lib)
        step = model.training_step

        def training_step(batch, batch_idx):
            if model.global_step >= 3:
                import time
                time.sleep(1.1)  # the budget is spent here
            return step(batch, batch_idx)

        model.training_step = training_step
        return model

    lightning, ours = run_both(slow, tmp_path, max_time={"seconds": 1}, max_epochs=50)
    assert lightning.global_step == 4
    assert_same_run(lightning, ours)
