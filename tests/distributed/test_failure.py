"""When one rank fails, every rank ends non-zero within a bounded time, and the error names the rank."""

from __future__ import annotations

import time


import jobrunner
from ember.distributed import EXIT_PEER_FAILED

BOUND = 30  # seconds from start to every process ended (startup takes ~5 of them)


def test_rank_raising_under_torchrun_ends_the_job(tmp_path):
    r = jobrunner.run("torchrun", "ddp_train.py", str(tmp_path / "o.ckpt"), str(tmp_path / "c.ckpt"),
                      "--fail-rank", "1", "--fail-step", "3", timeout=BOUND)
    assert r.returncode != 0
    assert "ValueError: boom at step 3" in r.output


def test_rank_raising_under_the_launcher_fails_rank_zero_naming_it(tmp_path):
    r = jobrunner.run("launcher", "ddp_train.py", str(tmp_path / "o.ckpt"), str(tmp_path / "c.ckpt"),
                      "--fail-rank", "1", "--fail-step", "3", timeout=BOUND)
    assert r.returncode != 0
    assert "PeerFailedError: rank 1 failed: ValueError: boom at step 3" in r.output


def test_rank_stuck_outside_collectives_ends_within_the_grace_period(tmp_path):
    procs = jobrunner.start_by_hand("ddp_train.py", str(tmp_path / "o.ckpt"), str(tmp_path / "c.ckpt"),
                                    "--fail-rank", "1", "--fail-step", "2", "--stuck-rank", "0", "--grace", "2")
    try:
        outs = [p.communicate(timeout=BOUND)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert procs[1].returncode == 1, outs[1]
    assert procs[0].returncode == EXIT_PEER_FAILED, outs[0]
    assert "rank 1 failed: ValueError: boom at step 2" in outs[0]


def test_launcher_child_dying_before_it_joins_ends_rank_zero(tmp_path):
    r = jobrunner.run("launcher", "lifetimes.py", "child-exits", str(tmp_path), "--grace", "2", timeout=BOUND)
    assert r.returncode == EXIT_PEER_FAILED, r.output
    assert "rank 1 failed: the process" in r.output and "exited with code 3" in r.output


def test_launcher_children_die_with_rank_zero(tmp_path):
    r = jobrunner.run("launcher", "lifetimes.py", "parent-killed", str(tmp_path), timeout=BOUND)
    assert r.returncode == -9, r.output
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child), f"rank 1 (pid {child}) outlived rank 0"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
