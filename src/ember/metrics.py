"""What self.log() records: per-step values, and epoch means weighted by batch size."""

from __future__ import annotations

from typing import Any

import torch

from ember.errors import MisconfigurationError


def _scalar(name: str, value: Any) -> float | torch.Tensor:
    """A logged value as a float, or as a detached one-element tensor (read later: no device sync per step)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise MisconfigurationError(f"self.log({name!r}) needs a scalar; received a tensor of shape {tuple(value.shape)}.")
        return value.detach()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return float(value)
    except ImportError:  # pragma: no cover
        pass
    raise MisconfigurationError(f"self.log({name!r}) needs a number or a scalar tensor; received {type(value).__name__}.")


def as_float(value: float | torch.Tensor) -> float:
    return float(value) if isinstance(value, torch.Tensor) else value


def batch_size_of(batch: Any) -> int:
    """The size of the first dimension of the first tensor found in a batch (1 if there is none)."""
    if batch is None:
        return 1
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            n = batch_size_of(item)
            if n:
                return n
    return 1


class MetricStore:
    """Collects logged values for one stage ('train' or 'validate')."""

    def __init__(self) -> None:
        self.step_values: dict[str, float | torch.Tensor] = {}  # this step's on_step values
        self.prog_bar: set[str] = set()
        self.for_logger: set[str] = set()
        self._sums: dict[str, tuple[float, float]] = {}  # name -> (weighted sum, weight)

    def begin_step(self) -> None:
        self.step_values = {}

    def record(self, name: str, value: Any, training: bool, batch: Any, prog_bar: bool = False,
               on_step: bool | None = None, on_epoch: bool | None = None, logger: bool = True,
               batch_size: int | None = None) -> None:
        if on_step is None:
            on_step = training
        if on_epoch is None:
            on_epoch = not training
        v = _scalar(name, value)
        step_name, epoch_name = (f"{name}_step", f"{name}_epoch") if (on_step and on_epoch) else (name, name)
        if on_step:
            self.step_values[step_name] = v
            if prog_bar:
                self.prog_bar.add(step_name)
            if logger:
                self.for_logger.add(step_name)
        if on_epoch:
            w = float(batch_size if batch_size is not None else batch_size_of(batch))
            s, n = self._sums.get(epoch_name, (0.0, 0.0))
            self._sums[epoch_name] = (s + as_float(v) * w, n + w)
            if prog_bar:
                self.prog_bar.add(epoch_name)
            if logger:
                self.for_logger.add(epoch_name)

    def epoch_means(self) -> dict[str, float]:
        out = {k: (s / n if n else float("nan")) for k, (s, n) in self._sums.items()}
        self._sums = {}
        return out
