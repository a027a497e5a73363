"""``lightning.pytorch.accelerators.cuda``: the CUDA accelerator and NVIDIA GPU statistics."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import torch

from ember.accelerators.accelerator import Accelerator


def num_cuda_devices() -> int:
    """How many CUDA devices this process can see."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def find_usable_cuda_devices(num_devices: int = -1) -> list[int]:
    """Indices of CUDA devices on which a tensor can be made (devices in exclusive mode taken by another process
    fail); ``-1`` asks for all that work.

    Args:
        num_devices: how many to find; -1 for every usable one.
    """
    if num_devices == 0:
        return []
    usable = []
    for index in range(num_cuda_devices()):
        try:
            torch.tensor(0, device=torch.device("cuda", index))
        except RuntimeError:
            continue
        usable.append(index)
        if len(usable) == num_devices:
            return usable
    if num_devices != -1:
        raise RuntimeError(f"asked for {num_devices} usable CUDA devices but found {len(usable)}: {usable}.")
    return usable


def get_nvidia_gpu_stats(device: Any) -> dict[str, float]:
    """Utilisation, memory and temperature of one NVIDIA GPU, read with ``nvidia-smi``.

    Args:
        device: the CUDA device (a ``torch.device`` or an index).
    """
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise FileNotFoundError("nvidia-smi was not found on PATH; it comes with NVIDIA's driver.")
    index = torch.device("cuda", device).index if isinstance(device, int) else torch.device(device).index or 0
    fields = [("utilization.gpu", "%"), ("memory.used", "MB"), ("memory.free", "MB"), ("utilization.memory", "%"),
              ("fan.speed", "%"), ("temperature.gpu", "°C"), ("temperature.memory", "°C")]
    out = subprocess.run([smi, f"--query-gpu={','.join(f for f, _ in fields)}", "--format=csv,nounits,noheader",
                          f"--id={index}"], capture_output=True, text=True, check=True).stdout
    values = [v.strip() for v in out.strip().split(",")]
    return {f"{f} ({unit})": float(v) for (f, unit), v in zip(fields, values) if v.replace(".", "", 1).isdigit()}


class CUDAAccelerator(Accelerator):
    """Run on NVIDIA GPUs (``Trainer(accelerator="cuda")`` or ``"gpu"``); ``devices=N`` starts N processes."""

    name = "cuda"

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` the current CUDA device.

        Args:
            device: a CUDA device.
        """
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"CUDAAccelerator runs on CUDA devices; received device {device}.")
        torch.cuda.set_device(device)

    def teardown(self) -> None:
        """Hand cached memory back to the driver."""
        torch.cuda.empty_cache()

    def get_device_stats(self, device: Any) -> dict[str, Any]:
        """``torch.cuda.memory_stats(device)``.

        Args:
            device: the CUDA device.
        """
        return torch.cuda.memory_stats(device)

    @staticmethod
    def parse_devices(devices: int | str | list[int]) -> list[int]:
        """The CUDA indices to use: ``N`` the first N, ``-1``/``"auto"`` all, a list as given.

        Args:
            devices: ``Trainer(devices=...)``.
        """
        if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
            devices = int(devices)
        if devices in (-1, "auto"):
            return list(range(num_cuda_devices()))
        if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
            return list(range(devices))
        if isinstance(devices, (list, tuple)) and all(isinstance(d, int) for d in devices):
            return list(devices)
        raise ValueError(f"devices for CUDA must be an int >= 1, -1, 'auto' or a list of indices; "
                         f"received {devices!r}.")

    @staticmethod
    def get_parallel_devices(devices: int | str | list[int]) -> list[torch.device]:
        """One ``torch.device("cuda", i)`` per index.

        Args:
            devices: ``Trainer(devices=...)``.
        """
        return [torch.device("cuda", i) for i in CUDAAccelerator.parse_devices(devices)]

    @staticmethod
    def auto_device_count() -> int:
        """The number of visible CUDA devices."""
        return num_cuda_devices()

    @staticmethod
    def is_available() -> bool:
        """Whether a CUDA device is visible."""
        return num_cuda_devices() > 0


__all__ = ["CUDAAccelerator", "find_usable_cuda_devices", "get_nvidia_gpu_stats", "num_cuda_devices"]
