"""A BaseFinetuning run resumed on 2 gloo ranks after its first unfreeze (tests/distributed/jobs/finetuning_resume.py)
ends with the weights of a run that never stopped, under the strategy that saved it and under the other one: the
callback's param groups are back before the optimizer states are laid out and loaded (under FSDP, by name into
shards, the restored groups' states sharded like their parameters)."""

from __future__ import annotations

import json

import jobrunner
import pytest


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_run_resumed_after_an_unfreeze_ends_as_an_uninterrupted_one(strategy, tmp_path):
    r = jobrunner.run("fork", "finetuning_resume.py", str(tmp_path), "--strategy", strategy, "--launch", "2",
                      timeout=180)
    assert r.returncode == 0, r.output
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0 == r1
    assert r0["lrs"] == [0.01, 0.001, 0.001]
    assert r0["max_diff"] == [0.0, 0.0]  # resumed under the same strategy, and under the other one
