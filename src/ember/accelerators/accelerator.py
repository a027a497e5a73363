"""``lightning.pytorch.accelerators.accelerator``: the device kind a Trainer runs on."""

from __future__ import annotations

from typing import Any

import torch


class Accelerator:
    """A kind of device: CPU or CUDA. ``Trainer(accelerator=CPUAccelerator())`` is the same as
    ``Trainer(accelerator="cpu")``; subclasses answer the questions Lightning's accelerators answer.

    ``name`` is the string the Trainer understands for it.
    """

    name: str = ""

    def setup_device(self, device: torch.device) -> None:
        """Prepare ``device`` for this process (CUDA: make it the current device).

        Args:
            device: the device this process runs on.
        """

    def teardown(self) -> None:
        """Release what :meth:`setup_device` took."""

    def get_device_stats(self, device: Any) -> dict[str, Any]:
        """Numbers about the device's use (memory, load), for ``DeviceStatsMonitor``.

        Args:
            device: the device to describe.
        """
        raise NotImplementedError(f"{type(self).__name__} reports no device statistics.")

    @staticmethod
    def parse_devices(devices: Any) -> Any:
        """``Trainer(devices=...)`` in this accelerator's terms (a count or a list of indices).

        Args:
            devices: what the Trainer was given.
        """
        raise NotImplementedError

    @staticmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        """The ``torch.device`` of each process for ``devices``.

        Args:
            devices: what :meth:`parse_devices` returned.
        """
        raise NotImplementedError

    @staticmethod
    def auto_device_count() -> int:
        """How many devices ``devices="auto"`` uses."""
        raise NotImplementedError

    @staticmethod
    def is_available() -> bool:
        """Whether this machine has such a device."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


__all__ = ["Accelerator"]
