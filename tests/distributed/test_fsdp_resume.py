"""An FSDP run on 2 ranks resumed mid-epoch from its folder checkpoint (sharded weights and optimizer
state, every rank's loop state gathered into it) ends with the weights of the run that saved it and went
on (tests/distributed/jobs/fsdp_train.py fit: dropout with a different stream per rank, shuffled shards,
AdamW)."""

from __future__ import annotations

import pytest
import torch

import jobrunner


@pytest.fixture(scope="module")
def saved_mid_epoch(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp-fit")
    r = jobrunner.run("torchrun", "fsdp_train.py", "fit", str(out), "--save-at", "9")  # epoch 1, batch 3 of 6
    assert r.returncode == 0, r.output
    return out


def test_fsdp_resumed_mid_epoch_equals_the_run_that_went_on(saved_mid_epoch):
    r = jobrunner.run("fork", "fsdp_train.py", "fit", str(saved_mid_epoch), "--resume")
    assert r.returncode == 0, r.output
    whole, resumed = torch.load(saved_mid_epoch / "final.pt"), torch.load(saved_mid_epoch / "resumed.pt")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
