"""Trainer(accelerator, devices, num_nodes, strategy): which strategy a run gets, and the errors for
arguments ember cannot honour (no process is started in these tests)."""

from __future__ import annotations

import pytest

import ember
import jobrunner
from ember.distributed.env import DistributedError
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
    with pytest.raises(MisconfigurationError, match=r"strategy must be one of \['auto', 'ddp', 'fsdp', 'ddp_spawn', "
                       r"'ddp_find_unused_parameters_true', 'ddp_find_unused_parameters_false'\].*'made_up'"):
        ember.Trainer(accelerator="cpu", strategy="made_up")  # (deepspeed is refused by the not-supported list)


@pytest.mark.parametrize("name, find_unused", [("ddp", False), ("ddp_find_unused_parameters_true", True),
                                                ("ddp_find_unused_parameters_false", False)])
def test_lightnings_ddp_strategy_names_choose_find_unused_parameters(name, find_unused, monkeypatch):
    monkeypatch.setattr("ember.distributed.select.launch", lambda n: None)
    monkeypatch.setattr("ember.distributed.select.JobEnv.detect", lambda: None)
    chosen = strategy_for(name, "cpu", 2, 1)
    assert chosen.ddp_kwargs["find_unused_parameters"] is find_unused


def test_many_nodes_without_torchrun_or_node_variables_says_how_to_start_them():
    with pytest.raises(DistributedError,
                       match=r"num_nodes=2 without torchrun needs NODE_RANK, MASTER_ADDR and "
                             r"MASTER_PORT on every node \(NODE_RANK, MASTER_ADDR, MASTER_PORT not set"):
        ember.Trainer(accelerator="cpu", devices=2, num_nodes=2)


def test_a_node_rank_outside_the_nodes_is_refused(monkeypatch):
    monkeypatch.setenv("NODE_RANK", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(DistributedError, match=r"NODE_RANK must be an integer in \[0, 2\).*received NODE_RANK='2'"):
        ember.Trainer(accelerator="cpu", devices=1, num_nodes=2)


def test_a_job_of_another_size_than_devices_times_nodes_is_refused(monkeypatch):
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(MisconfigurationError, match=r"devices=1, num_nodes=3\) asks for 3 processes, but the job "
                                                    r"has WORLD_SIZE=2"):
        ember.Trainer(accelerator="cpu", devices=1, num_nodes=3)
