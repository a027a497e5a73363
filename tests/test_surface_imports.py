"""Lightning's import paths and utilities, spelled as Lightning 2.x spells them."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import ember as pl


@pytest.mark.parametrize("path, name", [
    ("ember", "Callback"), ("ember", "LightningModule"), ("ember", "Trainer"), ("ember", "seed_everything"),
    ("ember.callbacks", "Callback"), ("ember.callbacks", "ModelCheckpoint"), ("ember.callbacks", "EarlyStopping"),
    ("ember.callbacks", "LearningRateMonitor"), ("ember.callbacks", "TQDMProgressBar"),
    ("ember.callbacks", "ModelSummary"), ("ember.callbacks", "OnExceptionCheckpoint"),
    ("ember.loggers", "Logger"), ("ember.loggers", "CSVLogger"), ("ember.loggers", "TensorBoardLogger"),
    ("ember.utilities", "rank_zero_only"), ("ember.utilities", "rank_zero_info"), ("ember.utilities", "rank_zero_warn"),
    ("ember.utilities", "seed_everything"), ("ember.utilities", "AttributeDict"), ("ember.utilities", "grad_norm"),
    ("ember.utilities.model_summary", "ModelSummary"), ("ember.utilities.model_summary", "summarize"),
    ("ember.core", "LightningModule"), ("ember.core.module", "LightningModule"),
    # module paths as Lightning names them
    ("ember.loggers.logger", "Logger"), ("ember.loggers.logger", "rank_zero_experiment"),
    ("ember.loggers", "LightningLoggerBase"), ("ember.loggers.csv_logs", "CSVLogger"),
    ("ember.loggers.tensorboard", "TensorBoardLogger"), ("ember.utilities.rank_zero", "rank_zero_only"),
    ("ember.utilities.grads", "grad_norm"), ("ember.callbacks.early_stopping", "EarlyStopping"),
    ("ember.callbacks.lr_monitor", "LearningRateMonitor"), ("ember.callbacks.model_summary", "ModelSummary"),
    ("ember.callbacks.model_checkpoint", "ModelCheckpoint"), ("ember.cli", "LightningCLI"),
])
def test_lightning_import_paths_resolve(path, name):
    assert getattr(importlib.import_module(path), name) is not None


def test_the_packages_are_attributes_of_ember():
    assert pl.callbacks.EarlyStopping is pl.callbacks.early_stopping.EarlyStopping
    assert pl.loggers.CSVLogger is pl.loggers.csv_logs.CSVLogger
    assert pl.core.LightningModule is pl.LightningModule
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        pl.Nope  # noqa: B018


def test_grad_norm_names_and_values_match_lightnings():
    from ember.utilities import grad_norm

    layer = nn.Linear(2, 1)
    layer(torch.ones(1, 2)).sum().backward()
    norms = grad_norm(layer, norm_type=2)
    assert set(norms) == {"grad_2.0_norm/weight", "grad_2.0_norm/bias", "grad_2.0_norm_total"}
    assert norms["grad_2.0_norm/weight"].item() == pytest.approx(2 ** 0.5)
    assert norms["grad_2.0_norm_total"].item() == pytest.approx(3 ** 0.5)
    with pytest.raises(ValueError, match="positive number or 'inf'"):
        grad_norm(layer, norm_type=0)


def test_rank_zero_warn_warns_on_rank_zero_only(monkeypatch):
    from ember.utilities import rank_zero_warn

    with pytest.warns(UserWarning, match="careful"):
        rank_zero_warn("careful")
    for k, v in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rank_zero_warn("careful")  # another rank: nothing


def test_model_summary_table_counts_parameters():
    from ember.utilities.model_summary import summarize

    model = nn.Sequential(nn.Linear(10, 100), nn.Sequential(nn.Linear(100, 5), nn.ReLU()))
    model[0].weight.requires_grad_(False)
    text = str(summarize(model, max_depth=1))
    lines = text.splitlines()
    assert lines[0].split("|")[1:] == [" Name ", " Type       ", " Params ", " Mode"]
    assert "0 | 0    | Linear     | 1.1 K  | train" in lines
    assert "1 | 1    | Sequential | 505    | train" in lines
    assert "1.6 K     Total params" in lines and "1.0 K     Non-trainable params" in lines
    assert len(summarize(model, max_depth=-1).layers) == 4 and summarize(model, max_depth=0).layers == []
