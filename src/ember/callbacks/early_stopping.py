"""EarlyStopping: stop fit when a logged metric has stopped improving (Lightning's arguments).

Its count survives a resume: ``wait_count``, ``stopped_epoch``, ``best_score`` and ``patience`` are
saved in every checkpoint and given back on ``fit(ckpt_path=...)``."""

from __future__ import annotations

import math
import warnings
from enum import Enum
from typing import Any

from ember.core.callback import Callback
from ember.errors import MisconfigurationError

_MODES = ("min", "max")


class EarlyStoppingReason(Enum):
    """Why EarlyStopping stopped the run (``EarlyStopping.stopping_reason``), as Lightning names it.

    Args:
        value: a member's number, to look it up (``EarlyStoppingReason(3)`` is ``PATIENCE_EXHAUSTED``).
    """

    NOT_STOPPED = 0
    STOPPING_THRESHOLD = 1
    DIVERGENCE_THRESHOLD = 2
    PATIENCE_EXHAUSTED = 3
    NON_FINITE_METRIC = 4


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` checks.

    Checks run after each training epoch (validation has run by then), or after each validation
    when validation runs mid-epoch (``check_on_train_epoch_end=False`` forces that). Also stops when
    the value is not finite (``check_finite``), reaches ``stopping_threshold``, or is worse than
    ``divergence_threshold``. ``strict`` raises when the metric was never logged (else warns once).

    Args:
        monitor: the logged metric to watch.
        min_delta: the smallest change that counts as an improvement (its absolute value is used).
        patience: checks without improvement before stopping (>= 0, else ``MisconfigurationError``).
        verbose: print why the run stopped (on global zero).
        mode: "min" (lower is better, default) or "max"; another raises ``MisconfigurationError``.
        strict: raise when ``monitor`` was never logged (False: warn once).
        check_finite: stop when the metric is NaN or infinite.
        stopping_threshold: stop as soon as the metric is better than this (None: never).
        divergence_threshold: stop as soon as the metric is worse than this (None: never).
        check_on_train_epoch_end: check at each training epoch's end; False checks after each validation;
            None picks as above.
        log_rank_zero_only: stored for Lightning's API.
    """

    def __init__(self, monitor: str, min_delta: float = 0.0, patience: int = 3, verbose: bool = False,
                 mode: str = "min", strict: bool = True, check_finite: bool = True,
                 stopping_threshold: float | None = None, divergence_threshold: float | None = None,
                 check_on_train_epoch_end: bool | None = None, log_rank_zero_only: bool = False) -> None:
        if mode not in _MODES:
            raise MisconfigurationError(f"EarlyStopping mode must be 'min' or 'max'; received {mode!r}.")
        if patience < 0:
            raise MisconfigurationError(f"EarlyStopping patience must be >= 0; received {patience}.")
        self.monitor, self.mode, self.patience, self.verbose = monitor, mode, patience, verbose
        self.min_delta = abs(float(min_delta))
        self.strict, self.check_finite = strict, check_finite
        self.stopping_threshold, self.divergence_threshold = stopping_threshold, divergence_threshold
        self._check_on_train_epoch_end = check_on_train_epoch_end
        self.log_rank_zero_only = log_rank_zero_only
        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = math.inf if mode == "min" else -math.inf
        self.stopping_reason_message: str | None = None
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self._warned = False

    @property
    def state_key(self) -> str:
        return f"EarlyStopping[{self.monitor}:{self.mode}]"

    def state_dict(self) -> dict[str, Any]:
        return {"wait_count": self.wait_count, "stopped_epoch": self.stopped_epoch,
                "best_score": float(self.best_score), "patience": self.patience}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait_count = int(state["wait_count"])
        self.stopped_epoch = int(state["stopped_epoch"])
        best = state["best_score"]
        self.best_score = float(best.item() if hasattr(best, "item") else best)
        self.patience = int(state["patience"])

    # ---------------------------------------------------------------- when to check
    def _on_epoch_end(self, trainer) -> bool:
        if self._check_on_train_epoch_end is not None:
            return self._check_on_train_epoch_end
        settings = getattr(trainer, "settings", None)  # validation once per epoch, every epoch: check after it
        return (getattr(settings, "val_check_interval", 1.0) == 1.0
                and getattr(settings, "check_val_every_n_epoch", 1) == 1)

    def on_train_epoch_end(self, trainer, module) -> None:
        if self._on_epoch_end(trainer):
            self._run_check(trainer)

    def on_validation_end(self, trainer, module) -> None:
        if not self._on_epoch_end(trainer):
            self._run_check(trainer)

    # ---------------------------------------------------------------- the check
    def _improved(self, current: float) -> bool:
        if self.mode == "min":
            return current < self.best_score - self.min_delta
        return current > self.best_score + self.min_delta

    def _current(self, trainer) -> float | None:
        metrics = trainer.callback_metrics
        if self.monitor in metrics:
            return float(metrics[self.monitor])
        message = (f"EarlyStopping is conditioned on the metric {self.monitor!r}, which was not logged; the "
                   f"logged metrics are {sorted(metrics)}. Log it with self.log({self.monitor!r}, value), or "
                   "pass another monitor (strict=False ignores a missing metric).")
        if self.strict:
            raise RuntimeError(message)
        if not self._warned:
            warnings.warn(message, stacklevel=2)
            self._warned = True
        return None

    def _run_check(self, trainer) -> None:
        if trainer.should_stop or getattr(trainer, "sanity_checking", False) or not getattr(trainer, "fitting", True):
            return  # as Lightning: only while fitting, never on the sanity check's values
        current = self._current(trainer)
        if current is None:
            return
        stop, reason = self._evaluate(current)
        if stop:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason
            self.stopping_reason = _reason_of(reason)
            if self.verbose and getattr(trainer, "is_global_zero", True):
                print(f"ember: EarlyStopping: {reason}", flush=True)

    def _evaluate(self, current: float) -> tuple[bool, str | None]:
        better = (lambda a, b: a < b) if self.mode == "min" else (lambda a, b: a > b)
        name = self.monitor
        if self.check_finite and not math.isfinite(current):
            return True, (f"{name} = {current} is not finite; previous best {self.best_score:.3f}. "
                          "Signaling Trainer to stop.")
        if self.stopping_threshold is not None and better(current, self.stopping_threshold):
            return True, (f"stopping threshold reached: {name} = {current} "
                          f"{'<' if self.mode == 'min' else '>'} {self.stopping_threshold}. Signaling Trainer to stop.")
        if self.divergence_threshold is not None and better(-current, -self.divergence_threshold):
            return True, (f"divergence threshold reached: {name} = {current} "
                          f"{'>' if self.mode == 'min' else '<'} {self.divergence_threshold}. "
                          "Signaling Trainer to stop.")
        if self._improved(current):
            improvement = ("" if not math.isfinite(self.best_score)
                           else f" by {abs(self.best_score - current):.3f}")
            self.best_score, self.wait_count = current, 0
            if self.verbose:
                print(f"ember: EarlyStopping: {name} improved{improvement}; new best {current:.3f}", flush=True)
            return False, None
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return True, (f"{name} did not improve in the last {self.wait_count} records; best score "
                          f"{self.best_score:.3f}. Signaling Trainer to stop.")
        return False, None


def _reason_of(message: str) -> EarlyStoppingReason:
    """The reason named by a stop message of ``EarlyStopping._evaluate``."""
    for start, reason in (("stopping threshold", EarlyStoppingReason.STOPPING_THRESHOLD),
                          ("divergence threshold", EarlyStoppingReason.DIVERGENCE_THRESHOLD)):
        if message.startswith(start):
            return reason
    return (EarlyStoppingReason.NON_FINITE_METRIC if "is not finite" in message
            else EarlyStoppingReason.PATIENCE_EXHAUSTED)
