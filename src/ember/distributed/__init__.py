"""Many processes on torch.distributed: the job's environment, the launcher, DDP, FSDP, failures.

The Trainer wires these in (docs/DISTRIBUTED.md): ``launch(devices)`` early in a plain ``python``
process, then ``DDPStrategy(...).setup()`` (or ``FSDPStrategy``) on every rank, and the strategy's methods in fit.
"""

from ember.distributed.env import (
    DistributedError,
    JobEnv,
    global_rank,
    is_global_zero,
    local_rank,
    rank_zero_only,
    world_size,
)
from ember.distributed.failure import EXIT_PEER_FAILED, PeerFailedError
from ember.distributed.group import init, teardown
from ember.distributed.launcher import launch
from ember.distributed.strategy import DDPStrategy, ParallelStrategy

__all__ = [
    "DDPStrategy",
    "DistributedError",
    "EXIT_PEER_FAILED",
    "FSDPStrategy",
    "JobEnv",
    "ParallelStrategy",
    "PeerFailedError",
    "global_rank",
    "init",
    "is_global_zero",
    "launch",
    "local_rank",
    "rank_zero_only",
    "teardown",
    "world_size",
]


def __getattr__(name: str):
    """``FSDPStrategy`` on first use: importing torch's FSDP and checkpoint modules costs ~1.5 s, which
    ``import ember`` (and the ``ember`` command) should not pay."""
    if name == "FSDPStrategy":
        from ember.distributed.fsdp import FSDPStrategy  # deferred: loaded on first use of the name

        return FSDPStrategy
    raise AttributeError(f"module 'ember.distributed' has no attribute {name!r}")
