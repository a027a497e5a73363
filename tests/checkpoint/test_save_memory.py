"""Peak extra memory of a save: a synchronous save is bounded by buffers, not the checkpoint's size;
a background save holds one host copy. Measured in a fresh process with the kernel's high-water mark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).parent.parent / "jobs" / "save_memory.py"
STATE_MIB = 256

pytestmark = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                                reason="needs /proc/self/clear_refs to reset the peak RSS")


def extra_mib(tmp_path, mode):
    out = subprocess.run([sys.executable, str(JOB), str(tmp_path), mode], capture_output=True, text=True,
                         check=True, timeout=120)
    return float(out.stdout.strip())


def test_sync_save_extra_memory_is_bounded_by_buffers(tmp_path):
    assert extra_mib(tmp_path, "sync") < 0.25 * STATE_MIB


def test_async_save_holds_one_host_copy(tmp_path):
    extra = extra_mib(tmp_path, "async")
    assert 0.9 * STATE_MIB < extra < 1.25 * STATE_MIB
