"""The data and checkpoint hooks a LightningModule or a datamodule may override (Lightning's ``DataHooks`` and
``CheckpointHooks``), and the default batch transfer."""

from __future__ import annotations

from typing import Any

import torch



class DataHooks:
    """The data hooks a LightningModule (and a datamodule) may override: download in ``prepare_data``
    (one process per machine), build datasets in ``setup(stage)``, move batches with the transfer hooks."""

    def prepare_data(self) -> None:
        """Download or write data once per machine, before ``setup``; do not set state here."""

    def setup(self, stage: str) -> None:
        """Build what each process needs for ``stage`` (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``).

        Args:
            stage: the Trainer method that is starting.
        """

    def teardown(self, stage: str) -> None:
        """Release what ``setup`` built, when ``stage`` ends.

        Args:
            stage: the Trainer method that is ending.
        """

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change a batch before it moves to the device; return it.

        Args:
            batch: the batch from the loader.
            dataloader_idx: which loader it came from.
        """
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move a batch to ``device`` (tensors in dicts, lists and tuples by default); return it.

        Args:
            batch: the batch.
            device: the device of this process.
            dataloader_idx: which loader it came from.
        """
        return move_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change a batch once it is on the device (augment on the GPU); return it.

        Args:
            batch: the batch on the device.
            dataloader_idx: which loader it came from.
        """
        return batch


class CheckpointHooks:
    """Hooks that add to or read from the checkpoint dict."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add entries to ``checkpoint`` before it is written (tensors, numbers, strings, lists, dicts).

        Args:
            checkpoint: the dict being saved.
        """

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read what :meth:`on_save_checkpoint` added, before the state is restored.

        Args:
            checkpoint: the dict that was loaded.
        """


def move_to_device(batch: Any, device: torch.device) -> Any:
    """A batch (tensors in dicts, lists, tuples, named tuples) on ``device``.

    Args:
        batch: the batch; other types are returned as they are.
        device: the target device (a CPU device returns ``batch`` unchanged).
    """
    if device.type == "cpu":
        return batch  # data loaders yield CPU tensors; nothing to move
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return type(batch)((k, move_to_device(v, device)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch
