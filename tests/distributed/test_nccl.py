"""NCCL on CUDA (skipped on machines without GPUs)."""

from __future__ import annotations

import pytest
import torch

import jobrunner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_nccl_job_runs_each_rank_on_its_own_device():
    n = min(2, torch.cuda.device_count())
    r = jobrunner.run("torchrun", "cuda_probe.py", nproc=n)
    assert r.returncode == 0, r.output
    assert all(f"rank {i} ok" in r.output for i in range(n))
