"""What the FSDP jobs and their tests share: the model, the global batches, and the seam to the folder
checkpoint (torch's DCP today; ``ember.checkpoint.sharded`` once it is merged: change the three
functions at the bottom, nothing else)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

STEPS, GLOBAL_BATCH = 4, 12  # 12 rows divide among 1, 2 and 3 ranks


class Net(nn.Module):
    """Two Linear layers (each its own FSDP unit) and a parameter held by the root itself."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 3))

    def training_step(self, batch, batch_idx=0):
        x, y = batch
        return nn.functional.cross_entropy(self.body(x) * self.scale, y)


def build(seed: int = 0, dropout: float = 0.0) -> Net:
    torch.manual_seed(seed)
    return Net(dropout)


def optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)


def global_batches(steps: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.randn(steps * GLOBAL_BATCH, 6, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return [(x[i:i + GLOBAL_BATCH], y[i:i + GLOBAL_BATCH]) for i in range(0, len(x), GLOBAL_BATCH)]


def shard(batch, rank: int, world: int):
    """This rank's equal part of a global batch."""
    n = GLOBAL_BATCH // world
    return tuple(t[rank * n:(rank + 1) * n] for t in batch)


# ---------------------------------------------------------------- the seam to the folder checkpoint
def save_folder(state: dict[str, Any], location: Path | str) -> None:
    """Collective (every rank): ember.checkpoint.sharded.save_sharded(state, location) at merge."""
    dcp.save(state, storage_writer=FileSystemWriter(str(location)))


def load_folder(state: dict[str, Any], location: Path | str) -> dict[str, Any]:
    """Collective: ember.checkpoint.sharded.load_sharded(state, location) at merge. Fills the tensors of
    ``state`` in place (resharding); returns them with the saved entries ``state`` lacks."""
    reader = FileSystemReader(str(location))
    dcp.load(state, storage_reader=reader)
    saved_tops = {path[0] for path in reader.read_metadata().planner_data.values()}
    rest = saved_tops - set(state)
    return {**(_load_state_dict_from_keys(rest, storage_reader=FileSystemReader(str(location))) if rest else {}),
            **state}


def read_folder_full(location: Path | str) -> dict[str, Any]:
    """One plain process: ember.checkpoint.sharded.read_full(location) at merge."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is unavailable or uninitialized")
        return _load_state_dict_from_keys(storage_reader=FileSystemReader(str(location)))
