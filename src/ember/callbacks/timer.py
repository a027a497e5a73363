"""Timer: how long each stage ran, and a time limit for training (Lightning's callback).

``Trainer(max_time=...)`` is this callback with ``interval="step"``; its elapsed training time is
saved in every checkpoint, so a resumed run counts the time spent before the stop."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from enum import Enum
from typing import Any

from ember.core.callback import Callback
from ember.errors import DurationTypeError, MisconfigurationError
from ember.utilities.rank_zero import rank_zero_info

STAGES = ("train", "sanity_check", "validate", "test", "predict")  # Lightning's RunningStage values
_DURATION = re.compile(r"^(\d+):(\d\d):(\d\d):(\d\d)$")


class Interval(str, Enum):
    step = "step"
    epoch = "epoch"


_FORMS = ("Expected a string in the format DD:HH:MM:SS (days, then two digits each of hours, minutes and seconds: "
          "'00:12:00:00' is 12 hours), a datetime.timedelta, or a dict of its keywords such as {'hours': 12}.")


def parse_duration(duration: str | timedelta | dict[str, int] | None) -> timedelta | None:
    """``"DD:HH:MM:SS"``, a ``timedelta`` or ``timedelta``'s keywords as a dict (``{"hours": 1}``). A malformed
    string raises ``MisconfigurationError`` (Lightning's ``MisconfigurationException``); a bad dict or another type
    ``DurationTypeError``, also a TypeError (what Lightning raises for a bad dict). Each message begins as
    Lightning's (``Timer(duration=...)`` is not a valid duration) and says what to pass instead."""
    if duration is None or isinstance(duration, timedelta):
        return duration
    head = f"`Timer(duration={duration!r})` is not a valid duration"
    if isinstance(duration, str):
        m = _DURATION.match(duration.strip())
        if m is None:
            raise MisconfigurationError(f"{head}. {_FORMS}")
        d, h, mi, s = (int(g) for g in m.groups())
        return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    if isinstance(duration, dict):
        try:
            return timedelta(**duration)
        except TypeError as e:
            raise DurationTypeError(f"{head}: {e}. A dict must hold datetime.timedelta's keywords (weeks, days, "
                                    "hours, minutes, seconds, milliseconds, microseconds) with numbers, such as "
                                    "{'hours': 12}.") from None
    hint = ""
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        hint = f" For {duration} seconds, pass {{'seconds': {duration}}}."
    raise DurationTypeError(f"{head}: received type {type(duration).__name__}. {_FORMS}{hint}")


class Timer(Callback):
    """Stops training once ``duration`` has passed, checked after every batch (``interval="step"``)
    or every epoch (``interval="epoch"``); without a duration it only measures.

    ``start_time(stage)``, ``end_time(stage)``, ``time_elapsed(stage)`` and ``time_remaining(stage)``
    (seconds; stage ``"train"`` by default, or ``"validate"``, ``"test"``, ``"predict"``,
    ``"sanity_check"``) tell how long each stage ran.

    Args:
        duration: the training time limit: ``"DD:HH:MM:SS"``, a ``datetime.timedelta``, a dict of its keywords
            (``{"hours": 2}``), or None to only measure.
        interval: when the limit is checked: "step" (after every batch) or "epoch".
        verbose: print a line when the limit stops training.

    Bad values raise ``MisconfigurationError`` (a bad dict or type: ``DurationTypeError``, also a TypeError).
    """

    def __init__(self, duration: str | timedelta | dict[str, int] | None = None, interval: str = Interval.step,
                 verbose: bool = True) -> None:
        interval = getattr(interval, "value", interval)  # Lightning's Interval enum works too
        if interval not in ("step", "epoch"):
            raise MisconfigurationError(f"Unsupported parameter value `Timer(interval={interval})`. Possible choices "
                                        "are: step, epoch")
        duration = parse_duration(duration)
        self._duration = duration.total_seconds() if duration is not None else None
        self._interval = Interval(interval)
        self._verbose = verbose
        self._start: dict[str, float | None] = dict.fromkeys(STAGES)
        self._end: dict[str, float | None] = dict.fromkeys(STAGES)
        self._offset = 0.0  # training time spent before a resume

    @property
    def duration(self) -> float | None:
        """The time limit in seconds (None: no limit)."""
        return self._duration

    def start_time(self, stage: str = "train") -> float | None:
        """When ``stage`` last started (``time.monotonic()``), or None.

        Args:
            stage: "train" (default), "validate", "test", "predict" or "sanity_check".
        """
        return self._start[_stage(stage)]

    def end_time(self, stage: str = "train") -> float | None:
        """When ``stage`` last ended (``time.monotonic()``), or None while it runs or before it ran.

        Args:
            stage: "train" (default), "validate", "test", "predict" or "sanity_check".
        """
        return self._end[_stage(stage)]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds ``stage`` has run (training includes the time before a resume).

        Args:
            stage: "train" (default), "validate", "test", "predict" or "sanity_check".
        """
        stage = _stage(stage)
        start, end = self._start[stage], self._end[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        return offset + ((end if end is not None else time.monotonic()) - start)

    def time_remaining(self, stage: str = "train") -> float | None:
        """Seconds left of ``duration`` (None without a duration).

        Args:
            stage: the stage whose elapsed time counts: "train" (default) or another stage's name.
        """
        if self._duration is None:
            return None
        return self._duration - self.time_elapsed(stage)

    def _begin(self, stage: str) -> None:
        self._start[stage], self._end[stage] = time.monotonic(), None

    def _finish(self, stage: str) -> None:
        self._end[stage] = time.monotonic()

    def on_train_start(self, trainer, module) -> None:
        self._begin("train")

    def on_train_end(self, trainer, module) -> None:
        self._finish("train")

    def on_validation_start(self, trainer, module) -> None:
        self._begin("sanity_check" if getattr(trainer, "sanity_checking", False) else "validate")

    def on_validation_end(self, trainer, module) -> None:
        self._finish("sanity_check" if getattr(trainer, "sanity_checking", False) else "validate")

    def on_test_start(self, trainer, module) -> None:
        self._begin("test")

    def on_test_end(self, trainer, module) -> None:
        self._finish("test")

    def on_predict_start(self, trainer, module) -> None:
        self._begin("predict")

    def on_predict_end(self, trainer, module) -> None:
        self._finish("predict")

    def on_fit_start(self, trainer, module) -> None:
        if self._duration is not None:  # resumed past the limit: no training at all
            self._check(trainer)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if self._interval is Interval.step and self._duration is not None:
            self._check(trainer)

    def on_train_epoch_end(self, trainer, module) -> None:
        if self._interval is Interval.epoch and self._duration is not None:
            self._check(trainer)

    def _check(self, trainer) -> None:
        stop = self.time_elapsed() >= self._duration
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None and hasattr(strategy, "broadcast_object"):
            stop = strategy.broadcast_object(stop)  # rank 0's clock decides: every rank stops at one step
        if stop:
            self._stop(trainer)

    def _stop(self, trainer) -> None:
        if not trainer.should_stop:
            trainer.should_stop = True
            if self._verbose and getattr(trainer, "is_global_zero", True):
                print(f"ember: Timer: time limit reached; elapsed {timedelta(seconds=int(self.time_elapsed()))}. "
                      "Signaling Trainer to stop.", flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in STAGES}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._offset = float(state.get("time_elapsed", {}).get("train", 0.0))


def _stage(stage: Any) -> str:
    value = getattr(stage, "value", stage)  # Lightning's RunningStage enum works too
    if value not in STAGES:
        raise MisconfigurationError(f"Timer stages are {list(STAGES)}; received {stage!r}.")
    return value


def max_time_callback(max_time: Any, callbacks: list) -> Timer | None:
    """The callback that enforces ``Trainer(max_time=...)``: Lightning's ``Timer(duration=max_time,
    interval="step")``; None without a limit, or when a Timer is among ``callbacks`` (the one given wins).

    Args:
        max_time: ``"DD:HH:MM:SS"``, a ``timedelta``, a dict such as ``{"hours": 1}``, or None.
        callbacks: the Trainer's callbacks so far.
    """
    if max_time is None:
        return None
    if any(isinstance(cb, Timer) for cb in callbacks):
        rank_zero_info("Ignoring `Trainer(max_time=...)`, callbacks list already contains a Timer.")
        return None
    try:
        return Timer(duration=max_time, interval="step")
    except MisconfigurationError as e:  # the same error, naming the argument the program passed
        raise type(e)(f"{e} (Given as `Trainer(max_time={max_time!r})`.)") from None
