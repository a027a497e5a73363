"""Which process of which job this is: the torchrun environment, ranks, and ``rank_zero_only``.

A job is described by the variables torchrun sets in every process it starts (ember's launcher sets
the same ones): ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``. The rank functions prefer the joined process group, then these variables, then
the answer for a process that runs alone (rank 0 of 1)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import torch.distributed as dist

REQUIRED = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A distributed job could not be started, joined or continued; the message says why and what to do.

    Args:
        *args: the message (one string), as for ``RuntimeError``.
    """


@dataclass(kw_only=True, frozen=True)
class JobEnv:
    """This process's place in a torchrun-style job, as its environment states it.

    Args:
        rank: the process's rank in the whole job (in [0, world_size), else ``DistributedError``).
        local_rank: its rank on this machine (in [0, local_world_size), else ``DistributedError``).
        world_size: the number of processes in the job.
        local_world_size: the number of processes on this machine.
        master_addr: the host of the job's rendezvous store.
        master_port: its port.
        restart: torchrun's restart count (default 0).
    """

    rank: int
    """The process's rank in the whole job (``RANK``)."""
    local_rank: int
    """Its rank on this machine (``LOCAL_RANK``); picks the CUDA device."""
    world_size: int
    """Processes in the job (``WORLD_SIZE``)."""
    local_world_size: int
    """Processes on this machine (``LOCAL_WORLD_SIZE``; ``WORLD_SIZE`` when unset)."""
    master_addr: str
    """Host of the job's rendezvous store (``MASTER_ADDR``)."""
    master_port: int
    """Its port (``MASTER_PORT``)."""
    restart: int = 0
    """torchrun's ``TORCHELASTIC_RESTART_COUNT``: keys of a restarted attempt must not meet the last one's."""

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise DistributedError(f"RANK must be in [0, WORLD_SIZE={self.world_size}); received RANK={self.rank}. "
                                   "Start the job with torchrun or ember's launcher, which set both.")
        if not 0 <= self.local_rank < self.local_world_size:
            raise DistributedError(
                f"LOCAL_RANK must be in [0, LOCAL_WORLD_SIZE={self.local_world_size}); received LOCAL_RANK="
                f"{self.local_rank}. Start the job with torchrun or ember's launcher, which set both.")

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> "JobEnv | None":
        """The job described by ``environ`` (default ``os.environ``), or None when no job variable is set.

        Some variables set but not all is an error: a half-configured job would hang at rendezvous.

        Args:
            environ: the environment to read (None: ``os.environ``).
        """
        environ = os.environ if environ is None else environ
        present = [k for k in REQUIRED if k in environ]
        if not present:
            return None
        missing = [k for k in REQUIRED if k not in environ]
        if missing:
            raise DistributedError(
                f"a torchrun job needs {', '.join(REQUIRED)} in the environment; {', '.join(present)} "
                f"{'is' if len(present) == 1 else 'are'} set but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not. Start the script with torchrun (python -m "
                "torch.distributed.run --nproc-per-node N script.py) or as a plain `python script.py` with no "
                "RANK/WORLD_SIZE variables, so that ember starts the processes itself.")
        world = _int(environ, "WORLD_SIZE")
        return cls(rank=_int(environ, "RANK"), local_rank=_int(environ, "LOCAL_RANK"), world_size=world,
                   local_world_size=_int(environ, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in environ else world,
                   master_addr=environ["MASTER_ADDR"], master_port=_int(environ, "MASTER_PORT"),
                   restart=_int(environ, "TORCHELASTIC_RESTART_COUNT") if "TORCHELASTIC_RESTART_COUNT" in environ
                   else 0)


def _int(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name} must be an integer; received {name}={value!r}.") from None


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized()


def global_rank() -> int:
    """This process's rank in the job (0 when it runs alone)."""
    if _joined():
        return dist.get_rank()
    job = JobEnv.detect()
    return job.rank if job is not None else 0


def local_rank() -> int:
    """This process's rank on its machine (0 when it runs alone)."""
    job = JobEnv.detect()
    return job.local_rank if job is not None else 0


def world_size() -> int:
    """Processes in the job (1 when this one runs alone)."""
    if _joined():
        return dist.get_world_size()
    job = JobEnv.detect()
    return job.world_size if job is not None else 1


def is_global_zero() -> bool:
    """Whether this process is rank 0: the one that writes files and prints."""
    return global_rank() == 0


class Ranks:
    """``global_rank`` and ``local_rank`` as properties: the one definition that a LightningModule, the
    Trainer and the strategies share (``JobRanks`` adds ``world_size`` and ``is_global_zero``)."""

    @property
    def global_rank(self) -> int:
        """This process's rank in the job (0 when it runs alone)."""
        return global_rank()

    @property
    def local_rank(self) -> int:
        """This process's rank on its machine (0 when it runs alone)."""
        return local_rank()


class JobRanks(Ranks):
    """``Ranks`` and the job's size: the Trainer's and the strategies' rank properties."""

    @property
    def world_size(self) -> int:
        """Processes in the job (1 when this one runs alone)."""
        return world_size()

    @property
    def is_global_zero(self) -> bool:
        """Whether this process is rank 0: the one that writes the run's files and prints."""
        return is_global_zero()


F = TypeVar("F", bound=Callable[..., Any])


def rank_zero_only(fn: F) -> F:
    """Run ``fn`` only on rank 0; on other ranks the call does nothing and returns None.

    The rank is read at each call, so a function decorated at import time is right after the
    launcher has set the environment.

    Args:
        fn: the function to guard.
    """

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if global_rank() == 0:
            return fn(*args, **kwargs)
        return None

    return wrapped  # type: ignore[return-value]
