"""What the FSDP jobs and their tests share: the model, the global batches, and the seam to the folder
checkpoint (``ember.checkpoint.sharded``: ember's own writer and reader, no pickle on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.checkpoint.sharded import load_sharded, read_full, save_sharded

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
    """Collective (every rank): the sharded checkpoint folder ``location``."""
    save_sharded(state, location)


def load_folder(state: dict[str, Any], location: Path | str) -> dict[str, Any]:
    """Collective: fills the tensors of ``state`` in place (resharding); returns the whole checkpoint,
    with the saved entries ``state`` lacks."""
    return load_sharded(state, location)


def read_folder_full(location: Path | str) -> dict[str, Any]:
    """One plain process: every value whole."""
    return read_full(location)
