"""``lightning.pytorch.trainer.states``: what the Trainer is doing (``trainer.state``).

(Moves to ``ember/trainer/states.py`` when ``ember.trainer`` becomes a package.)
"""

from __future__ import annotations

from dataclasses import dataclass

from ember.utilities.enums import LightningEnum


class TrainerStatus(LightningEnum):
    """Where the Trainer is in its life: built, running a stage, done, or stopped by an error."""

    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"

    @property
    def stopped(self) -> bool:
        """Whether the Trainer has finished or was interrupted."""
        return self in (TrainerStatus.FINISHED, TrainerStatus.INTERRUPTED)


class TrainerFn(LightningEnum):
    """The Trainer method being run: ``fit``, ``validate``, ``test`` or ``predict``."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(LightningEnum):
    """The loop being run inside a Trainer method (fit runs sanity checking, training and validation)."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    @property
    def evaluating(self) -> bool:
        """Whether this stage evaluates (validation, sanity check, test)."""
        return self in (RunningStage.VALIDATING, RunningStage.TESTING, RunningStage.SANITY_CHECKING)

    @property
    def dataloader_prefix(self) -> str | None:
        """The prefix of this stage's loader hook: ``"val"`` for validation and sanity checking."""
        if self in (RunningStage.VALIDATING, RunningStage.SANITY_CHECKING):
            return "val"
        return self.value


@dataclass
class TrainerState:
    """``trainer.state``: the status, the method being run and the stage inside it.

    Args:
        status: the Trainer's status.
        fn: the method being run (or last run), None before any.
        stage: the loop being run, None outside one.
    """

    status: TrainerStatus = TrainerStatus.INITIALIZING
    fn: TrainerFn | None = None
    stage: RunningStage | None = None

    @property
    def finished(self) -> bool:
        """Whether the last method ran to its end."""
        return self.status == TrainerStatus.FINISHED

    @property
    def stopped(self) -> bool:
        """Whether the last method has ended, normally or by an error."""
        return self.status.stopped


__all__ = ["RunningStage", "TrainerFn", "TrainerState", "TrainerStatus"]
