"""``lightning.pytorch.utilities.data``: batch sizes and loader lengths."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from ember.core.hooks import move_to_device
from ember.loops.data import length


def extract_batch_size(batch: Any) -> int:
    """The batch size ``self.log`` would use: the first dimension of the first tensor found in ``batch``.

    Args:
        batch: a tensor, or dicts, lists and tuples holding tensors.
    """
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, str):
        return len(batch)
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        try:
            return extract_batch_size(item)
        except (RecursionError, ValueError):
            continue
    raise ValueError(f"could not find a tensor in the batch (a {type(batch).__name__}) to take its size from; "
                     "pass self.log(..., batch_size=N).")


def sized_len(dataloader: Any) -> int | None:
    """``len(dataloader)``, or None when it has no length (an iterable dataset).

    Args:
        dataloader: any iterable.
    """
    return length(dataloader)


def has_iterable_dataset(dataloader: Any) -> bool:
    """Whether the loader reads an ``IterableDataset``.

    Args:
        dataloader: a DataLoader (anything else gives False).
    """
    return isinstance(getattr(dataloader, "dataset", None), IterableDataset)


def has_len_all_ranks(dataloader: DataLoader, strategy: Any = None, allow_zero_length_dataloader_with_multiple_devices:
                      bool = False) -> bool:
    """Whether the loader has a length (on every rank, when ``strategy`` can reduce across them).

    Args:
        dataloader: the loader.
        strategy: the Trainer's strategy, or None in one process.
        allow_zero_length_dataloader_with_multiple_devices: accept a loader that is empty on some ranks.
    """
    n = sized_len(dataloader)
    if n is None:
        return False
    reduce = getattr(strategy, "reduce", None)
    total = int(reduce(torch.tensor(n), "sum")) if callable(reduce) else n
    if total == 0:
        raise RuntimeError("the dataloader is empty on every rank; give it data.")
    if n == 0 and not allow_zero_length_dataloader_with_multiple_devices:
        raise RuntimeError("the dataloader is empty on this rank but not on others; give every rank data.")
    return True


def move_data_to_device(batch: Any, device: torch.device | str | int) -> Any:
    """A batch (tensors in dicts, lists, tuples, named tuples) on ``device``.

    Args:
        batch: the batch.
        device: where to put its tensors.
    """
    return move_to_device(batch, torch.device(device))


def suggested_max_num_workers(local_world_size: int) -> int:
    """How many loader workers each process can use: the CPU cores this process may run on, shared by the
    processes on this machine, less one for the main process (at least 1).

    Args:
        local_world_size: processes on this machine.
    """
    if local_world_size < 1:
        raise ValueError(f"local_world_size must be >= 1; received {local_world_size}.")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // local_world_size - 1)


__all__ = ["extract_batch_size", "has_iterable_dataset", "has_len_all_ranks", "move_data_to_device",
           "sized_len", "suggested_max_num_workers"]
