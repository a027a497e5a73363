"""Trainer(accelerator, devices, num_nodes, strategy): which strategy a run gets, and the errors for
arguments ember cannot honour (no process is started in these tests)."""

from __future__ import annotations

import pytest

import ember
import jobrunner
from ember.distributed.select import strategy_for
from ember.errors import MisconfigurationError


@pytest.fixture(autouse=True)
def no_job(monkeypatch):
    for k in jobrunner.JOB_VARS:
        monkeypatch.delenv(k, raising=False)


@pytest.mark.parametrize("devices", [1, "1", "auto", None, [0]])
def test_one_device_without_a_job_is_one_process(devices):
    assert strategy_for("ddp", "cpu", devices, 1) is None
    assert ember.Trainer(accelerator="cpu", devices=devices, logger=False).world_size == 1


@pytest.mark.parametrize("devices", [0, -2, "two", 1.5, True])
def test_a_bad_devices_value_is_refused(devices):
    with pytest.raises(MisconfigurationError, match=r"devices must be an int >= 1.*received devices="):
        ember.Trainer(accelerator="cpu", devices=devices)


def test_an_unknown_strategy_is_refused():
    with pytest.raises(MisconfigurationError, match=r"strategy must be one of \['auto', 'ddp', 'fsdp', "
                       r"'ddp_find_unused_parameters_true', 'ddp_find_unused_parameters_false'\].*'deepspeed'"):
        ember.Trainer(accelerator="cpu", strategy="deepspeed")


@pytest.mark.parametrize("name, find_unused", [("ddp", False), ("ddp_find_unused_parameters_true", True),
                                                ("ddp_find_unused_parameters_false", False)])
def test_lightnings_ddp_strategy_names_choose_find_unused_parameters(name, find_unused, monkeypatch):
    monkeypatch.setattr("ember.distributed.select.launch", lambda n: None)
    monkeypatch.setattr("ember.distributed.select.JobEnv.detect", lambda: None)
    chosen = strategy_for(name, "cpu", 2, 1)
    assert chosen.ddp_kwargs["find_unused_parameters"] is find_unused


def test_many_nodes_without_torchrun_says_how_to_start_them():
    with pytest.raises(MisconfigurationError, match=r"num_nodes=2 needs a job started by torchrun"):
        ember.Trainer(accelerator="cpu", devices=2, num_nodes=2)
