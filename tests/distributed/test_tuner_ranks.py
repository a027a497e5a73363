"""The tuner on 2 gloo ranks (tests/distributed/jobs/tuner_ranks.py): every rank reads back the temporary
checkpoint rank 0 named and wrote, rank 0 removes it only once all have, and every rank fits with the
same suggestion (rank 0's record: each rank's own batches gave it another loss curve)."""

from __future__ import annotations

import json

import jobrunner
import pytest


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lr_find_and_scale_batch_size_agree_on_every_rank_and_leave_no_checkpoint(strategy, tmp_path):
    r = jobrunner.run("fork", "tuner_ranks.py", str(tmp_path), "--strategy", strategy, "--launch", "2",
                      timeout=180)
    assert r.returncode == 0, r.output
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0 == r1
    assert r0["lr"] is not None and r0["batch_size"] == 8 and r0["global_step"] == 4  # 64 samples / 2 ranks / 8
    assert r0["left"] == [] and not list(tmp_path.glob(".tuner*"))
