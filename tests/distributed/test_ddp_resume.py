"""A DDP run on 2 ranks stopped mid-epoch and resumed from rank 0's single-file checkpoint ends with
the weights of a run that never stopped (tests/distributed/jobs/ddp_train.py: dropout with
different random streams per rank, shuffled shards, AdamW)."""

from __future__ import annotations

import pytest
import torch

import ember
import jobrunner


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    r = jobrunner.run("fork", "ddp_train.py", str(tmp / "final.ckpt"), str(tmp / "unused.ckpt"))
    assert r.returncode == 0, r.output
    return ember.load_checkpoint(tmp / "final.ckpt")["state_dict"]


@pytest.mark.parametrize("stop_by, resume_by", [("torchrun", "fork"), ("fork", "launcher")])
def test_resumed_mid_epoch_equals_uninterrupted(stop_by, resume_by, uninterrupted, tmp_path):
    """(A resume under torchrun is the same code path: the probe checks each rank's state comes back there.)"""
    ckpt, final = str(tmp_path / "mid.ckpt"), str(tmp_path / "final.ckpt")
    stopped = jobrunner.run(stop_by, "ddp_train.py", final, ckpt, "--stop-at", "9")  # epoch 1, batch 3 of 6
    assert stopped.returncode == 0, stopped.output
    saved = ember.load_checkpoint(ckpt)
    assert (saved["epoch"], saved["global_step"], saved["loops"]["fit"]["batch"]) == (1, 9, 3)
    assert len(saved["loops"]["fit"]["ranks"]) == 2
    resumed = jobrunner.run(resume_by, "ddp_train.py", final, ckpt, "--resume")
    assert resumed.returncode == 0, resumed.output
    weights = ember.load_checkpoint(final)["state_dict"]
    assert weights.keys() == uninterrupted.keys()
    assert all(torch.equal(weights[k], uninterrupted[k]) for k in weights)
