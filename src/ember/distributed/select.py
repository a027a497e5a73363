"""Which strategy a Trainer runs with, from its ``accelerator``, ``devices``, ``num_nodes`` and ``strategy``.

One process (None) unless the job has more than one process: ``devices > 1`` in a plain ``python``
process (ember starts the others, each re-running the script), a job started by torchrun, or
``num_nodes > 1`` started by hand on each machine with ``NODE_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` (ember starts each machine's processes).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ember.distributed.env import JobEnv
from ember.distributed.launcher import launch
from ember.distributed.strategy import DDPStrategy, ParallelStrategy
from ember.errors import MisconfigurationError

STRATEGIES = ("auto", "ddp", "fsdp", "ddp_spawn", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")
ALIASES = {"ddp_spawn": "ddp"}  # ember launches processes that re-run the script (Lightning's "ddp" launch)


def _devices(devices: Any, accelerator: str) -> int:
    if devices is None or devices == "auto" or devices == -1:
        if accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available()):
            return max(1, torch.cuda.device_count())
        return 1
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)) and all(isinstance(d, int) for d in devices):
        devices = len(devices)  # Lightning's device indices: one process per listed device
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise MisconfigurationError(
            f"devices must be an int >= 1, 'auto', -1 or a list of device indices; received devices={devices!r}.")
    return devices


def strategy_for(strategy: Any, accelerator: str, devices: Any, num_nodes: int):
    """The strategy to run with (None: one process). In a plain process with ``devices > 1`` this starts
    the job's other processes (they re-run the script from the top), so call it once, early."""
    if not isinstance(num_nodes, int) or isinstance(num_nodes, bool) or num_nodes < 1:
        raise MisconfigurationError(f"num_nodes must be an int >= 1; received num_nodes={num_nodes!r}.")
    if not (isinstance(strategy, ParallelStrategy) or strategy in STRATEGIES):
        raise MisconfigurationError(
            f"strategy must be one of {list(STRATEGIES)}, DDPStrategy(...) or FSDPStrategy(...); received "
            f"strategy={strategy!r}.")
    strategy = ALIASES.get(strategy, strategy) if isinstance(strategy, str) else strategy
    n = _devices(devices, accelerator)
    if num_nodes > 1 and "RANK" not in os.environ:  # started by hand on each node: NODE_RANK, MASTER_ADDR/PORT
        launch(n, num_nodes=num_nodes)
    job = JobEnv.detect()
    if job is not None and devices not in (None, "auto", -1) and job.world_size != n * num_nodes:
        raise MisconfigurationError(
            f"Trainer(devices={devices}, num_nodes={num_nodes}) asks for {n * num_nodes} processes, but the job has "
            f"WORLD_SIZE={job.world_size}. Start {n} processes on each of {num_nodes} nodes (torchrun --nnodes "
            f"{num_nodes} --nproc-per-node {n}), or pass the devices and num_nodes the job was started with.")
    if job is None and n == 1:
        return None
    if job is not None and job.world_size == 1:
        return None
    if isinstance(strategy, ParallelStrategy):
        chosen = strategy
    elif strategy == "fsdp":
        from ember.distributed.fsdp import FSDPStrategy  # deferred: imports torch's FSDP and DCP (~1 s)

        chosen = FSDPStrategy(accelerator=accelerator)
    else:  # Lightning's names: "ddp", "ddp_find_unused_parameters_true" / "_false"
        chosen = DDPStrategy(accelerator=accelerator, find_unused_parameters=strategy.endswith("_true"))
    if job is not None and devices in (None, "auto", -1):
        n = job.local_world_size  # under torchrun, "auto" is what torchrun started
    launch(n)
    return chosen
