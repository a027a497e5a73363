"""The fit loop's position: epoch, batch and step counters, saved in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Progress:
    """Where the loop is (part of the loop's Stateful state)."""

    epoch: int = 0            # the epoch being trained (or just finished, when epoch_done)
    batch: int = 0            # batches consumed in this epoch
    global_step: int = 0      # optimizer steps taken
    epoch_done: bool = False  # the epoch finished (validation, schedulers and epoch-end hooks ran)
    batches_stepped: int = 0  # batches that ended in an optimizer step (all, by hand): the loggers' step count
    batches_total: int = 0    # batches trained in all epochs (Lightning's total batch count)

    def state_dict(self) -> dict[str, Any]:
        """Every counter, by name."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The counters of ``state`` (a file older than a counter gives its best estimate)."""
        for k in ("epoch", "batch", "global_step", "epoch_done"):
            setattr(self, k, state[k])
        self.batches_stepped = state.get("batches_stepped", self.global_step)  # files written before it existed
        self.batches_total = state.get("batches_total", self.batches_stepped)  # (exact without accumulation)
