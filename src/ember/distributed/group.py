"""Joining the job's process group, and leaving it.

``init(accelerator)`` joins the job the environment describes (torchrun's, or the one ember's launcher
started): gloo on CPU, NCCL on CUDA with this process's device set from ``LOCAL_RANK``. Every
collective then times out after ``timeout`` seconds instead of torch's 10 minutes (NCCL) or 30
(gloo), and a failure watchdog runs (``ember.distributed.failure``). ``teardown()`` stops the
watchdog, waits for every rank, and destroys the group.

Leaving at interpreter exit (``init`` registers it; users need not call anything). Each gloo group
runs worker threads that execute the collectives; a worker lets go of a finished collective (and
of the tensors it used) only after the caller has been told it is done. When Python has dropped
those tensors meanwhile, letting go needs the GIL; if the interpreter is already finalizing, Python
ends the worker thread inside a C++ destructor and the process aborts ("terminate called without an
active exception", SIGABRT) though the job succeeded. ``destroy_process_group`` does not stop the
workers while any object (a DDP wrapper, an FSDP module, a background save's group) still refers
to the group; the group's destructor does, and waits for them. So the exit handler, while the
interpreter is whole: waits for ember's background saves (their collectives run on a group of their
own), stops the watchdog, destroys the groups, lets go of what ember holds that refers to them
(``on_leave`` callbacks) and collects garbage, so a group nothing else refers to is destructed there
and its workers joined; DDP and FSDP keep theirs alive to the end, so it then waits, the GIL
released, until their workers are idle (``settle.py``) before finalization begins.
"""

from __future__ import annotations

import atexit
import gc
from datetime import timedelta
from typing import Callable

import torch
import torch.distributed as dist

from ember.checkpoint.sharded.layout import AT_FIRST_COLLECTIVE
from ember.distributed.env import DistributedError, JobEnv
from ember.distributed.failure import FailureBoard, FailureWatch
from ember.distributed.settle import settle_gloo_workers

DEFAULT_TIMEOUT = 600.0   # seconds a collective may wait for the slowest rank
DEFAULT_GRACE = 30.0      # seconds a rank may take to stop on its own after a peer failed

_watch: FailureWatch | None = None
_device: torch.device | None = None
_atexit = False
_on_leave: list[Callable[[], None]] = []  # run before the groups are destroyed at exit (see the docstring)


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
    global _watch, _device
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
    leave_at_exit()
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


def leave_at_exit() -> None:
    """Register the exit handler (once): a process that never calls teardown() still leaves its groups
    cleanly, whether ember or the user joined them."""
    global _atexit
    if not _atexit:
        atexit.register(_leave_at_exit)
        _atexit = True


def on_leave(callback: Callable[[], None]) -> None:
    """Run ``callback`` when the process leaves the job at exit, before the groups are destroyed: wait
    for background work that runs collectives, and let go of objects that refer to a group."""
    _on_leave.append(callback)


def _leave_at_exit() -> None:
    """The exit handler (see the module docstring). Never waits for peers: they may be gone."""
    callbacks = list(_on_leave)
    _on_leave.clear()
    for callback in reversed(callbacks):
        try:
            callback()
        except Exception:  # noqa: BLE001 - a failed background save was reported by its owner, or is moot now
            pass
    teardown(wait=False)
    gc.collect()  # groups no one else refers to are destructed here: their worker threads are joined
    settle_gloo_workers()  # the others' workers: idle, every collective released (settle.py)


# save_sharded/load_sharded on a group the user joined register the exit handler too (checkpoint sits below
# distributed and cannot import it: it calls the hooks registered here)
AT_FIRST_COLLECTIVE.append(leave_at_exit)
