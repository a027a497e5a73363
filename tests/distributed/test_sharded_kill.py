"""SIGKILL a 2-rank FSDP2 job while it saves last.ckpt/ again and again: after every kill, last.ckpt/
is a complete checkpoint that verifies and is at least as new as the last save the job reported,
and "last" resolves to it; the temporaries the killed job left are removed by the storage's cleanup()
(run when a fit starts) once it is gone."""

from __future__ import annotations

import os
import random
import signal
import time

import torch

import jobrunner
from ember.checkpoint.lookup import find_last
from ember.checkpoint.sharded import is_sharded_checkpoint, read_full, verify_sharded
from ember.checkpoint.storage.locations import open_store
from ember.checkpoint.storage.temporaries import TMP_PREFIX

KILLS = 3


def run_and_kill(folder, rng: random.Random) -> int:
    """Start the save loop, wait for its first committed save, SIGKILL both ranks at a random moment;
    returns the newest step rank 0 reported saved."""
    procs = jobrunner.start_by_hand("sharded_fsdp.py", "loop", str(folder))
    try:
        deadline = time.monotonic() + jobrunner.TIMEOUT
        while procs[0].stdout.readline().strip() != "saved 1":
            assert time.monotonic() < deadline and procs[0].poll() is None, "the job never saved"
        time.sleep(rng.uniform(0.0, 0.6))
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
    out = procs[0].communicate(timeout=30)[0]
    for p in procs[1:]:
        p.communicate(timeout=30)
    return max([1] + [int(line.split()[1]) for line in out.splitlines() if line.startswith("saved ")])


def test_kills_during_repeated_sharded_saves_leave_last_complete(tmp_path):
    rng = random.Random(2026)
    for _ in range(KILLS):
        reported = run_and_kill(tmp_path, rng)  # each run counts from 1 again, over the previous run's last.ckpt
        last = tmp_path / "last.ckpt"
        assert is_sharded_checkpoint(last)
        verify_sharded(last)
        ckpt = read_full(last)
        step = ckpt["global_step"]
        assert step >= reported  # this run's last reported save (or one the kill interrupted after its commit)
        for name, t in ckpt["state_dict"].items():
            assert torch.equal(t, torch.full_like(t, float(step))), name  # one save's bytes, not torn
        assert find_last([open_store(tmp_path)])[1] == "last.ckpt"
    open_store(tmp_path).cleanup()  # what a fit starting in the folder does
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
