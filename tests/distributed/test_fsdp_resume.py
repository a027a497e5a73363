"""An FSDP run on 2 ranks stopped mid-epoch and resumed from its folder checkpoint (sharded weights and
optimizer state, every rank's loop state gathered into it) ends with the weights of a run that never
stopped (tests/distributed/jobs/fsdp_train.py fit: dropout with a different stream per rank, shuffled
shards, AdamW)."""

from __future__ import annotations

import torch

import jobrunner


def test_fsdp_resumed_mid_epoch_equals_uninterrupted(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    r = jobrunner.run("launcher", "fsdp_train.py", "fit", str(whole))
    assert r.returncode == 0, r.output
    stopped = jobrunner.run("torchrun", "fsdp_train.py", "fit", str(parts), "--stop-at", "9")  # epoch 1, batch 3 of 6
    assert stopped.returncode == 0, stopped.output
    assert not (parts / "final.pt").exists()
    resumed = jobrunner.run("launcher", "fsdp_train.py", "fit", str(parts), "--resume")
    assert resumed.returncode == 0, resumed.output
    a, b = torch.load(whole / "final.pt"), torch.load(parts / "final.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
