"""FSDPStrategy on CUDA with NCCL (skipped on machines without GPUs)."""

from __future__ import annotations

import pytest
import torch

import jobrunner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_fsdp_shards_on_each_ranks_device_and_puts_its_state_back():
    n = min(2, torch.cuda.device_count())
    r = jobrunner.run("torchrun", "fsdp_cuda_probe.py", nproc=n)
    assert r.returncode == 0, r.output
    assert all(f"rank {i} ok" in r.output for i in range(n))
