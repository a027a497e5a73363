"""``lightning.pytorch.loggers.logger``: ``Logger`` and ``rank_zero_experiment`` for custom loggers."""

from __future__ import annotations

import functools
from typing import Any, Callable

from ember.distributed import global_rank
from ember.loggers.base import Logger

__all__ = ["DummyExperiment", "Logger", "rank_zero_experiment"]


class DummyExperiment:
    """Stands for the experiment on ranks other than 0: every method call does nothing."""

    def nop(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        return self.nop

    def __getitem__(self, idx: Any) -> "DummyExperiment":
        return self


def rank_zero_experiment(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Decorate a logger's ``experiment`` getter: rank 0 gets the real one, other ranks a DummyExperiment."""

    @functools.wraps(fn)
    def experiment(self: Any) -> Any:
        return fn(self) if global_rank() == 0 else DummyExperiment()

    return experiment
