"""Joining the job's process group, and leaving it.

``init(accelerator)`` joins the job the environment describes (torchrun's, or the one ember's launcher
started): gloo on CPU, NCCL on CUDA with this process's device set from ``LOCAL_RANK``. Every
collective then times out after ``timeout`` seconds instead of torch's 10 minutes (NCCL) or 30
(gloo), and a failure watchdog runs (``ember.distributed.failure``). ``teardown()`` stops the
watchdog, waits for every rank, and destroys the group.
"""

from __future__ import annotations

import atexit
from datetime import timedelta

import torch
import torch.distributed as dist

from ember.distributed.env import DistributedError, JobEnv
from ember.distributed.failure import FailureBoard, FailureWatch

DEFAULT_TIMEOUT = 600.0   # seconds a collective may wait for the slowest rank
DEFAULT_GRACE = 30.0      # seconds a rank may take to stop on its own after a peer failed

_watch: FailureWatch | None = None
_device: torch.device | None = None
_atexit = False


def backend_for(accelerator: str) -> tuple[str, bool]:
    """(backend, uses CUDA) for an accelerator name: "cpu" -> gloo; "cuda"/"gpu" -> nccl;
    "auto" -> nccl when CUDA is available, else gloo.

    Args:
        accelerator: "cpu", "cuda", "gpu" or "auto" (any case); another name, or CUDA without a GPU, raises
            ``DistributedError``.
    """
    name = str(accelerator).lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "gloo", False
    if name in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise DistributedError(f"accelerator={accelerator!r} needs CUDA, but torch.cuda.is_available() is False "
                                   "on this machine. Use accelerator='cpu' (gloo) or run on a machine with GPUs.")
        return "nccl", True
    raise DistributedError(f"accelerator must be 'cpu', 'cuda', 'gpu' or 'auto'; received {accelerator!r}.")


def init(accelerator: str = "auto", *, timeout: float = DEFAULT_TIMEOUT, grace: float = DEFAULT_GRACE) -> torch.device:
    """Join the job the environment describes and return this process's device. Idempotent: a second
    call (or a group the user already initialised) only returns the device.

    ``timeout`` (seconds) bounds every collective; ``grace`` is how long a rank may take to stop on
    its own after another rank failed before the watchdog ends it.

    Args:
        accelerator: "cpu" (gloo), "cuda"/"gpu" (NCCL; ``DistributedError`` without CUDA) or "auto".
        timeout: seconds any collective may wait (default 600).
        grace: seconds a rank may take to stop after a peer failed (default 30).

    Raises ``DistributedError`` when the environment describes no job.
    """
    global _watch, _device, _atexit
    backend, cuda = backend_for(accelerator)
    job = JobEnv.detect()
    if job is None:
        raise DistributedError(
            "init() joins a distributed job, but this process has no RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT in its "
            "environment. Start it with torchrun (python -m torch.distributed.run --nproc-per-node N script.py), "
            "or call ember.distributed.launch(devices) first.")
    device = torch.device("cuda", job.local_rank) if cuda else torch.device("cpu")
    if cuda:
        if job.local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK={job.local_rank} needs CUDA device {job.local_rank}, but this machine has "
                f"{torch.cuda.device_count()}. Start at most {torch.cuda.device_count()} processes per machine.")
        torch.cuda.set_device(device)
    if dist.is_initialized():
        _device = _device or device
        if _watch is None:
            _watch = _start_watch(job, grace)
        return _device
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout), rank=job.rank, world_size=job.world_size,
                            device_id=device if cuda else None)
    if not _atexit:  # a process that never calls teardown() still leaves the group cleanly
        atexit.register(teardown, wait=False)
        _atexit = True
    _device = device
    _watch = _start_watch(job, grace)
    return device


def _start_watch(job: JobEnv, grace: float) -> FailureWatch:
    board = FailureBoard.connect(job.master_addr, job.master_port, job.restart)
    dog = FailureBoard.connect(job.master_addr, job.master_port, job.restart)
    return FailureWatch(board, dog, job.rank, grace=grace)


def watch() -> FailureWatch | None:
    """The failure watch of the joined group (None before ``init``)."""
    return _watch


def device() -> torch.device:
    """The device ``init`` chose for this process (CPU before ``init``)."""
    return _device or torch.device("cpu")


def teardown(*, wait: bool = True) -> None:
    """Leave the job: stop the watchdog, wait for every rank (bounded by the group's timeout; pass
    ``wait=False`` when leaving because of an error: the peers may be gone), destroy the group.
    Does nothing when no group is joined.

    Args:
        wait: wait at a barrier for every rank before leaving (default True).
    """
    global _watch, _device
    if _watch is not None:
        _watch.stop()
        _watch = None
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()  # no rank closes the store (rank 0 hosts it) while a peer still reads it
        finally:
            dist.destroy_process_group()
    _device = None
