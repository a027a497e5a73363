"""``Trainer(max_time=...)``: stop training once a wall-clock budget is spent.

Lightning builds ``max_time`` on its ``Timer`` callback. ``max_time_callback`` returns ember's ``Timer``
where the package has one, else ``MaxTime`` below: the same check (after every training batch and at
each epoch's end), the same checkpointed state (``time_elapsed`` per stage under the key ``"Timer"``), so
a resumed run keeps counting from where it stopped."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from ember.callbacks.base import Callback
from ember.errors import MisconfigurationError


def parse_duration(value: str | timedelta | dict | int | float) -> timedelta:
    """``"DD:HH:MM:SS"``, a ``timedelta``, or a dict of ``timedelta`` arguments (``{"hours": 1}``)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, dict):
        try:
            return timedelta(**value)
        except TypeError as e:
            raise MisconfigurationError(f"max_time as a dict takes timedelta's keys (days, hours, minutes, "
                                        f"seconds, ...); received {value!r} ({e}).") from None
    if isinstance(value, str):
        parts = value.strip().split(":")
        if len(parts) == 4 and all(p.strip().isdigit() for p in parts):
            d, h, m, s = (int(p) for p in parts)
            return timedelta(days=d, hours=h, minutes=m, seconds=s)
    raise MisconfigurationError(f"max_time must be a 'DD:HH:MM:SS' string, a datetime.timedelta or a dict such as "
                                f"{{'hours': 1}}; received {value!r}.")


class MaxTime(Callback):
    """Sets ``trainer.should_stop`` once training has run ``duration`` (counted from the start of
    training; time spent in earlier runs of a resumed fit counts too)."""

    def __init__(self, duration: str | timedelta | dict) -> None:
        self.duration = parse_duration(duration)
        self._elapsed_before: dict[str, float] = {}
        self._started: float | None = None

    @property
    def state_key(self) -> str:
        return "Timer"  # Lightning's Timer key and layout: either reads the other's state

    def time_elapsed(self, stage: str = "train") -> float:
        now = 0.0 if self._started is None else time.monotonic() - self._started
        return self._elapsed_before.get(stage, 0.0) + (now if stage == "train" else 0.0)

    def time_remaining(self, stage: str = "train") -> float:
        return self.duration.total_seconds() - self.time_elapsed(stage)

    def on_train_start(self, trainer, module) -> None:
        self._started = time.monotonic()

    def on_train_end(self, trainer, module) -> None:
        self._elapsed_before["train"] = self.time_elapsed("train")
        self._started = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer, module) -> None:
        self._check(trainer)

    def _check(self, trainer) -> None:
        if trainer.should_stop or self.time_remaining() > 0:
            return
        trainer.should_stop = True
        if trainer.is_global_zero:
            print(f"Time limit reached. Elapsed time is {timedelta(seconds=int(self.time_elapsed()))}. "
                  "Signaling Trainer to stop.", flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {"train": self.time_elapsed("train")}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._elapsed_before = {k: float(v) for k, v in (state.get("time_elapsed") or {}).items()}


def max_time_callback(max_time: Any, callbacks: list) -> Callback | None:
    """The callback that enforces ``max_time`` (None: no limit, or a Timer is already among ``callbacks``)."""
    if max_time is None:
        return None
    if any(type(cb).__name__ in ("Timer", "MaxTime") for cb in callbacks):
        return None  # Lightning: the Timer given wins over Trainer(max_time=...)
    try:
        from ember.callbacks.timer import Timer  # the full callback, where the package has it
    except ImportError:
        return MaxTime(max_time)
    return Timer(duration=max_time, interval="step")
