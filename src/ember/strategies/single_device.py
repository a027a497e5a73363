"""``lightning.pytorch.strategies.single_device``: one process on one device."""

from __future__ import annotations

from typing import Any

import torch

from ember.strategies.strategy import Strategy


class SingleDeviceStrategy(Strategy):
    """One process on one device. ``Trainer(strategy=SingleDeviceStrategy("cuda:0"))`` runs like
    ``Trainer(accelerator="cuda", devices=1)``; ``strategy="single_device"`` like ``devices=1``.

    Args:
        device: where the model runs (``"cpu"``, ``"cuda:0"``, a ``torch.device`` or a CUDA index).
        accelerator: ignored (the device says it); accepted as Lightning does.
    """

    def __init__(self, device: Any = "cpu", accelerator: Any = None, **_: Any) -> None:
        self._device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)

    @property
    def root_device(self) -> torch.device:
        """The device."""
        return self._device

    @property
    def global_rank(self) -> int:
        """0: there is one process."""
        return 0

    @property
    def local_rank(self) -> int:
        """0: there is one process."""
        return 0

    @property
    def world_size(self) -> int:
        """1: there is one process."""
        return 1

    @property
    def is_global_zero(self) -> bool:
        """True: the one process is global rank 0."""
        return True

    def barrier(self, name: str | None = None) -> None:
        """Nothing to wait for in one process.

        Args:
            name: ignored.
        """

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` itself: one process has nothing to send.

        Args:
            obj: the object.
            src: ignored.
        """
        return obj

    def reduce(self, tensor: Any, *args: Any, **kwargs: Any) -> Any:
        """``tensor`` itself: the reduction over one process.

        Args:
            tensor: the value.
            *args: ignored (the group and the operation).
            **kwargs: ignored.
        """
        return tensor

    def __repr__(self) -> str:
        return f"SingleDeviceStrategy(device={str(self._device)!r})"


__all__ = ["SingleDeviceStrategy"]
