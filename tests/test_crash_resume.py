"""Real process kills: SIGKILL at random moments and SIGTERM both resume to bit-identical weights."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import forkstart
import pytest
import torch

JOB = Path(__file__).parent / "jobs" / "resume_job.py"
TOTAL_STEPS = 24


def start(root, out):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A session of its own, so a signal can go to the whole job (workers included), as preemption does.
    return forkstart.popen([str(JOB), str(root), str(out)], stdout=forkstart.PIPE, stderr=forkstart.PIPE, env=env,
                           start_new_session=True)


def run_to_end(root, out):
    proc = start(root, out)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return stdout


def run_until_step(root, out, step, sig, extra_delay):
    """Start the job, wait until it reports `step`, sleep `extra_delay`, send `sig` to its process group."""
    proc = start(root, out)
    for line in proc.stdout:
        if line.strip() == f"step {step}":
            break
    else:
        proc.wait(timeout=60)
        pytest.fail(f"job ended before step {step}: {proc.stderr.read()}")
    if extra_delay:
        import time

        time.sleep(extra_delay)
    os.killpg(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stdout, stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    run_to_end(root, root / "final.pt")
    return torch.load(root / "final.pt")


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigkill_at_random_moments_resumes_bit_identically(tmp_path, reference):
    rng = random.Random(20261130)
    reached = 0
    for _ in range(3):
        reached = rng.randint(reached + 1, reached + 7)
        code, _, _ = run_until_step(tmp_path, tmp_path / "final.pt", reached, signal.SIGKILL, rng.uniform(0, 0.03))
        assert code == -signal.SIGKILL
        assert not (tmp_path / "final.pt").exists()
    out = run_to_end(tmp_path, tmp_path / "final.pt")
    assert out.splitlines()[0] != "step 1"  # it resumed rather than starting over
    assert_same(torch.load(tmp_path / "final.pt"), reference)


def test_sigterm_saves_exits_cleanly_and_resumes_bit_identically(tmp_path, reference):
    code, out, err = run_until_step(tmp_path, tmp_path / "final.pt", 9, signal.SIGTERM, 0.0)
    assert code == 0, err
    assert "stopped" in out and "stop signal" in out
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    out = run_to_end(tmp_path, tmp_path / "final.pt")
    assert out.splitlines()[0] in ("step 10", "step 11")  # continues right after the saved step
    assert_same(torch.load(tmp_path / "final.pt"), reference)
