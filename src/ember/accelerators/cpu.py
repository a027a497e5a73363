"""``lightning.pytorch.accelerators.cpu``: the CPU accelerator."""

from __future__ import annotations
from typing import Any

import torch

from ember.accelerators.accelerator import Accelerator


def get_cpu_stats() -> dict[str, float]:
    """The machine's CPU and memory use in percent (``cpu_percent``, ``cpu_vm_percent``, ``cpu_swap_percent``);
    needs the ``psutil`` package."""
    try:
        import psutil  # deferred: optional dependency (psutil)
    except ImportError as e:
        raise ModuleNotFoundError("get_cpu_stats needs psutil: install it to see CPU statistics.") from e
    return {"cpu_vm_percent": psutil.virtual_memory().percent, "cpu_percent": psutil.cpu_percent(),
            "cpu_swap_percent": psutil.swap_memory().percent}


class CPUAccelerator(Accelerator):
    """Run on the CPU (``Trainer(accelerator="cpu")``); ``devices=N`` starts N processes."""

    name = "cpu"

    def setup_device(self, device: torch.device) -> None:
        """Check that ``device`` is a CPU.

        Args:
            device: the device this process runs on.
        """
        if torch.device(device).type != "cpu":
            raise ValueError(f"CPUAccelerator runs on the CPU; received device {device}.")

    def get_device_stats(self, device: Any) -> dict[str, Any]:
        """:func:`get_cpu_stats`.

        Args:
            device: ignored: there is one CPU.
        """
        return get_cpu_stats()

    @staticmethod
    def parse_devices(devices: int | str | list[int]) -> int:
        """The number of processes: an int, a digit string, or the length of a list.

        Args:
            devices: ``Trainer(devices=...)``.
        """
        if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
            devices = int(devices)
        if isinstance(devices, (list, tuple)):
            devices = len(devices)
        if devices == -1 or devices == "auto":
            return CPUAccelerator.auto_device_count()
        if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
            raise ValueError(f"devices for the CPU must be an int >= 1; received {devices!r}.")
        return devices

    @staticmethod
    def get_parallel_devices(devices: int | str | list[int]) -> list[torch.device]:
        """One ``torch.device("cpu")`` per process.

        Args:
            devices: ``Trainer(devices=...)``.
        """
        return [torch.device("cpu")] * CPUAccelerator.parse_devices(devices)

    @staticmethod
    def auto_device_count() -> int:
        """1: ``devices="auto"`` on the CPU runs one process."""
        return 1

    @staticmethod
    def is_available() -> bool:
        """True: there is always a CPU."""
        return True


__all__ = ["CPUAccelerator", "get_cpu_stats"]
