"""DeviceStatsMonitor: log the device's statistics around every training and validation batch
(Lightning's callback). CUDA: ``torch.cuda.memory_stats``. CPU: memory, swap and CPU use, from
psutil when installed, else (Linux) read from ``/proc`` (the same three numbers)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch

from ember.core.callback import Callback
from ember.errors import MisconfigurationError


def _proc_meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            out[name] = int(rest.split()[0])
    return out


class _ProcCpu:
    """``cpu_percent`` as psutil computes it: busy share of all CPUs since the previous call."""

    def __init__(self) -> None:
        self._last = self._times()

    @staticmethod
    def _times() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return idle, sum(values[:8])

    def percent(self) -> float:
        idle, total = self._times()
        d_idle, d_total = idle - self._last[0], total - self._last[1]
        self._last = (idle, total)
        return 0.0 if d_total <= 0 else round(100.0 * (1 - d_idle / d_total), 1)


def cpu_stats(cpu: _ProcCpu | None = None) -> dict[str, float]:
    """``cpu_vm_percent``, ``cpu_percent`` and ``cpu_swap_percent`` (Lightning's keys)."""
    if importlib.util.find_spec("psutil") is not None:
        import psutil  # deferred: optional dependency (psutil)

        return {"cpu_vm_percent": psutil.virtual_memory().percent, "cpu_percent": psutil.cpu_percent(),
                "cpu_swap_percent": psutil.swap_memory().percent}
    if not os.path.exists("/proc/meminfo"):
        raise ModuleNotFoundError("DeviceStatsMonitor reads CPU statistics with psutil on this system: "
                                  "pip install psutil (or DeviceStatsMonitor(cpu_stats=False)).")
    mem = _proc_meminfo()
    swap_total = mem.get("SwapTotal", 0)
    return {"cpu_vm_percent": round(100.0 * (1 - mem["MemAvailable"] / mem["MemTotal"]), 1),
            "cpu_percent": (cpu or _ProcCpu()).percent(),
            "cpu_swap_percent": round(100.0 * (1 - mem.get("SwapFree", 0) / swap_total), 1) if swap_total else 0.0}


class DeviceStatsMonitor(Callback):
    """Logs ``DeviceStatsMonitor.<hook>/<stat>`` to every logger before and after each training and
    validation batch, every ``log_every_n_steps`` steps. ``cpu_stats``: None (CPU statistics when
    training on the CPU), True (also when training on a GPU) or False (never).

    Args:
        cpu_stats: None, True or False, as above; CPU statistics come from ``psutil`` when installed, else
            from ``/proc``.

    The Trainer must have a logger (else ``MisconfigurationError`` at setup).
    """

    def __init__(self, cpu_stats: bool | None = None) -> None:
        self._cpu_stats = cpu_stats
        self._cpu: _ProcCpu | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        if not trainer.loggers:
            raise MisconfigurationError("DeviceStatsMonitor logs to the Trainer's loggers, and it has none "
                                        "(logger=False); give it a logger, or remove the callback.")
        if self._cpu_stats is not False and os.path.exists("/proc/stat"):
            self._cpu = _ProcCpu()

    def _stats(self, device: torch.device) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if device.type == "cuda":
            out.update({k: v for k, v in torch.cuda.memory_stats(device).items() if isinstance(v, (int, float))})
            if self._cpu_stats:
                out.update(cpu_stats(self._cpu))
        elif self._cpu_stats is not False:
            out.update(cpu_stats(self._cpu))
        return out

    def _log(self, trainer, key: str) -> None:
        step = trainer.global_step
        if (step + 1) % max(1, trainer.settings.log_every_n_steps) != 0:
            return
        device = getattr(trainer, "device", torch.device("cpu"))
        stats = self._stats(device)
        if not stats:
            return
        for logger in trainer.loggers:
            sep = getattr(logger, "group_separator", "/")
            logger.log_metrics({f"{type(self).__qualname__}.{key}{sep}{k}": v for k, v in stats.items()}, step=step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._log(trainer, "on_train_batch_start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._log(trainer, "on_train_batch_end")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._log(trainer, "on_validation_batch_start")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._log(trainer, "on_validation_batch_end")
