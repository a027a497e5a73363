"""seed_everything with Lightning's signature: seed=None, workers=, verbose=."""

from __future__ import annotations

import os
import random

import pytest
import torch

import ember


def test_seed_everything_with_workers_gives_the_same_draws_and_exports_the_flag(monkeypatch):
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    assert ember.seed_everything(3, workers=True) == 3
    first = (random.random(), torch.rand(2))
    ember.seed_everything(3, workers=True)
    assert random.random() == first[0] and torch.equal(torch.rand(2), first[1])
    assert ember.seed_everything(3) == 3
    assert os.environ["PL_SEED_WORKERS"] == "0"


def test_seed_everything_without_a_seed_reads_pl_global_seed(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "11")
    assert ember.seed_everything() == 11


def test_seed_everything_without_any_seed_uses_zero_and_warns(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    with pytest.warns(UserWarning, match="seed set to 0"):
        assert ember.seed_everything() == 0


def test_seed_everything_refuses_a_pl_global_seed_that_is_not_an_int(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "abc")
    with pytest.raises(ValueError, match="PL_GLOBAL_SEED='abc'"):
        ember.seed_everything()
