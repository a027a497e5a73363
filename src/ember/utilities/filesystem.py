"""``is_shared_filesystem``: whether every process of the job sees the same files under a folder."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import torch


def is_shared_filesystem(strategy: Any = None, path: str | os.PathLike | None = None, timeout: int = 3) -> bool:
    """Whether a file global rank 0 writes under ``path`` is seen by every process (True in one process).

    Args:
        strategy: the Trainer's strategy (with ``broadcast``, ``reduce`` and ``is_global_zero``), None in one process.
        path: the folder to test (the working directory by default).
        timeout: seconds the other processes wait for the file to appear.
    """
    if strategy is None or getattr(strategy, "world_size", 1) == 1:
        return True
    folder = os.fspath(path) if path is not None else os.getcwd()
    broadcast = getattr(strategy, "broadcast", None) or strategy.broadcast_object
    name = broadcast(uuid.uuid4().hex if strategy.is_global_zero else None)
    probe = os.path.join(folder, f".ember-shared-{name}")
    if strategy.is_global_zero:
        with open(probe, "w"):
            pass
    strategy.barrier()
    deadline = time.monotonic() + timeout
    while not os.path.exists(probe) and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = int(strategy.reduce(torch.tensor(int(os.path.exists(probe))), "sum"))
    strategy.barrier()
    if strategy.is_global_zero:
        os.remove(probe)
    return seen == strategy.world_size


__all__ = ["is_shared_filesystem"]
