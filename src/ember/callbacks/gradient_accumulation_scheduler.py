"""GradientAccumulationScheduler: change ``accumulate_grad_batches`` at given epochs (Lightning's callback)."""

from __future__ import annotations

from typing import Any

from ember.core.callback import Callback
from ember.errors import MisconfigurationError


class GradientAccumulationScheduler(Callback):
    """``scheduling``: ``{epoch: accumulate_grad_batches}`` (epochs count from 0); from each listed
    epoch on, that many batches make one optimizer step. Before the first listed epoch, 1.

    Example: ``GradientAccumulationScheduler({0: 8, 4: 4, 8: 1})``. Leave the Trainer's
    ``accumulate_grad_batches`` at 1, and use automatic optimization.

    Args:
        scheduling: a non-empty dict of epoch (an int >= 0) to batches per step (an int >= 1); anything else
            raises ``MisconfigurationError``.
    """

    def __init__(self, scheduling: dict[int, int]) -> None:
        if not isinstance(scheduling, dict) or not scheduling:
            raise MisconfigurationError(f"GradientAccumulationScheduler needs a non-empty dict {{epoch: batches}}; "
                                        f"received {scheduling!r}.")
        for epoch, n in scheduling.items():
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise MisconfigurationError(f"GradientAccumulationScheduler's epochs must be ints >= 0; received "
                                            f"epoch {epoch!r} in {scheduling!r}.")
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise MisconfigurationError(f"GradientAccumulationScheduler's values must be ints >= 1; received "
                                            f"{n!r} for epoch {epoch} in {scheduling!r}.")
        self.scheduling = dict(sorted(scheduling.items()))
        self.epochs = list(self.scheduling)
        if 0 not in self.scheduling:
            self.scheduling = {0: 1, **self.scheduling}

    def going_to_accumulate_grad_batches(self) -> bool:
        """Whether any epoch accumulates more than one batch."""
        return any(v > 1 for v in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        """The number of batches per optimizer step in ``epoch``.

        Args:
            epoch: the training epoch, from 0.
        """
        value = 1
        for start, n in self.scheduling.items():
            if epoch >= start:
                value = n
        return value

    def on_train_start(self, trainer, module) -> None:
        if not getattr(module, "automatic_optimization", True):
            raise MisconfigurationError("GradientAccumulationScheduler needs automatic optimization; with "
                                        "automatic_optimization=False, accumulate gradients in training_step.")
        if trainer.settings.accumulate_grad_batches != 1:
            raise MisconfigurationError(
                f"the Trainer was given accumulate_grad_batches={trainer.settings.accumulate_grad_batches} and a "
                "GradientAccumulationScheduler; pass the schedule only (Trainer accumulate_grad_batches=1).")

    def on_train_epoch_start(self, trainer, module) -> None:
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {}
