"""``lightning.pytorch.loggers.logger``: ``Logger`` and ``rank_zero_experiment`` for custom loggers."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

from ember.distributed import global_rank
from ember.loggers.base import Logger

__all__ = ["DummyExperiment", "DummyLogger", "Logger", "merge_dicts", "rank_zero_experiment"]


class DummyExperiment:
    """Stands for the experiment on ranks other than 0: every method call does nothing."""

    def nop(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        return self.nop

    def __getitem__(self, idx: Any) -> "DummyExperiment":
        return self


def rank_zero_experiment(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Decorate a logger's ``experiment`` getter: rank 0 gets the real one, other ranks a DummyExperiment.

    Args:
        fn: the getter, ``(self) -> experiment``.
    """

    @functools.wraps(fn)
    def experiment(self: Any) -> Any:
        return fn(self) if global_rank() == 0 else DummyExperiment()

    return experiment


class DummyLogger(Logger):
    """A logger that records nothing; its ``experiment`` accepts any call. Stands in where a logger is
    required but nothing should be written."""

    @property
    def experiment(self) -> DummyExperiment:
        """A :class:`DummyExperiment`."""
        return DummyExperiment()

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        """Nothing.

        Args:
            *args: ignored.
            **kwargs: ignored.
        """

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        """Nothing.

        Args:
            *args: ignored.
            **kwargs: ignored.
        """

    @property
    def name(self) -> str:
        """``""``."""
        return ""

    @property
    def version(self) -> str:
        """``""``."""
        return ""

    def __getitem__(self, idx: int) -> "DummyLogger":
        return self

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def merge_dicts(dicts: Sequence[Mapping], agg_key_funcs: Mapping[str, Callable[[Sequence[float]], float]] | None = None,
                default_func: Callable[[Sequence[float]], float] | None = None) -> dict:
    """One dict from several: for each key, its values across the dicts combined by ``agg_key_funcs[key]``,
    else ``default_func`` (the mean); nested dicts are merged the same way; values that are not numbers
    keep the last one seen.

    Args:
        dicts: the dicts to merge.
        agg_key_funcs: how to combine the values of particular keys (e.g. ``{"loss": max}``).
        default_func: how to combine the others; the arithmetic mean when None.
    """
    funcs = dict(agg_key_funcs or {})
    combine = default_func or (lambda values: sum(values) / len(values))
    keys: list = []
    for d in dicts:
        keys += [k for k in d if k not in keys]
    out: dict = {}
    for key in keys:
        values = [d[key] for d in dicts if key in d]
        if all(isinstance(v, Mapping) for v in values):
            out[key] = merge_dicts(values, funcs.get(key), default_func)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = funcs.get(key, combine)(values)
        else:
            out[key] = values[-1]
    return out
