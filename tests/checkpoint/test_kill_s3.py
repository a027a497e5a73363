"""kill -9 during large multipart uploads to a real S3 API (the moto server): the final name holds the
old or the new complete checkpoint, "last" resolves to one that verifies, and no partial object or
temporary is ever listed."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import forkstart
import pytest
import torch

import ember
from ember.checkpoint.format import container
from ember.checkpoint.lookup import find_last
from ember.checkpoint.storage.locations import open_store

pytest.importorskip("s3fs")
JOB = Path(__file__).parent.parent / "jobs" / "save_loop.py"
SIZE_MIB = 40  # two multipart parts of 32 MiB


def kill_during_upload(url: str, rng: random.Random, after_a_save: bool = False) -> int | None:
    """Kill the save loop at a random moment (``after_a_save``: once it has committed one, so that a
    loaded machine, where an upload takes longer than the random delay, still tests a commit)."""
    proc = forkstart.popen([str(JOB), url, str(SIZE_MIB)], stdout=forkstart.PIPE, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    first = proc.stdout.readline().strip() if after_a_save else ""
    time.sleep(rng.uniform(0.2, 1.5))
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    saved = [int(line.split()[1]) for line in [first, *out.splitlines()] if line.startswith("saved ")]
    return saved[-1] if saved else None


def load_settled(url: str) -> dict:
    """Load, reading again if the object was replaced during the read: a CompleteMultipartUpload that
    the killed client had already sent can still land on the server after the kill."""
    for _ in range(5):
        try:
            return ember.load_checkpoint(url)
        except ember.CheckpointError as e:
            if "replaced while it was being read" not in str(e):
                raise
            time.sleep(0.2)
    return ember.load_checkpoint(url)


def test_sigkill_during_s3_uploads_leaves_only_complete_checkpoints(s3_bucket):
    rng = random.Random(9)
    url = s3_bucket + "/run"
    store = open_store(url)
    committed = None
    for attempt in range(4):
        reported = kill_during_upload(url, rng, after_a_save=attempt == 0)
        committed = reported if reported is not None else committed
        names = store.list("")
        assert all(n == "target.ckpt" or (n.startswith("step-") and n.endswith(".ckpt")) for n in names), names
        if not store.exists("target.ckpt"):
            assert committed is None
            continue
        ckpt = load_settled(url + "/target.ckpt")  # verifies every byte
        i = ckpt["global_step"]
        assert torch.equal(ckpt["w"], torch.full((SIZE_MIB << 18,), float(i)))
        assert committed is None or i in (committed, committed + 1)
        committed = i
        last_store, last = find_last([store])
        container.verify_file(last_store.describe(last))
        for name in names:
            container.verify_file(store.describe(name))  # nothing partial under any name
    assert committed is not None
