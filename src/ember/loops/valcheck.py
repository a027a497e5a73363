"""When fit validates: Lightning's rules for ``val_check_interval`` and ``check_val_every_n_epoch``.

An epoch validates when ``check_val_every_n_epoch`` is None or divides its number (counted from 1).
Within such an epoch, after each batch: a time interval validates once that long has passed since
the last validation (or since training started); otherwise validation follows every ``batch``-th
batch (``ValSchedule.batch``, Lightning's ``trainer.val_check_batch``), counted in the epoch, or
across epochs when ``check_val_every_n_epoch`` is None. The fit loop adds the stop requests."""

from __future__ import annotations

import math
from datetime import timedelta
from time import monotonic
from typing import Any, Callable

import torch

from ember.errors import MisconfigurationError

TIME_FORMS = (str, timedelta, dict)
"""The types of a time-based ``val_check_interval``."""

_TIME_HELP = ("a time-based val_check_interval is a 'DD:HH:MM:SS' string (e.g. '00:00:15:00' for 15 minutes), a "
              "datetime.timedelta, or a dict of timedelta's keywords such as {'minutes': 15}")


def interval_seconds(value: str | timedelta | dict) -> float:
    """The seconds a time-based ``val_check_interval`` stands for (four integers ``"DD:HH:MM:SS"``, a
    ``timedelta``, or ``timedelta``'s keywords as a dict); MisconfigurationError for anything else."""
    if isinstance(value, str):
        fields = value.split(":")
        try:
            days, hours, minutes, seconds = (int(f) for f in fields)
        except ValueError:
            raise MisconfigurationError(f"{_TIME_HELP}; received {value!r}, which is not four integers separated "
                                        f"by ':'.") from None
        value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    elif isinstance(value, dict):
        try:
            value = timedelta(**value)
        except TypeError as e:
            raise MisconfigurationError(f"{_TIME_HELP}; received {value!r} ({e}).") from None
    if not isinstance(value, timedelta):
        raise MisconfigurationError(f"{_TIME_HELP}; received {type(value).__name__} {value!r}.")
    if value < timedelta(0):
        raise MisconfigurationError(f"{_TIME_HELP}, and it cannot be negative; received {value!r}.")
    return value.total_seconds()


def check_combination(val_check_interval: Any, check_val_every_n_epoch: Any) -> None:
    """Lightning's rule: with ``check_val_every_n_epoch=None`` (validation by batch count across epochs),
    ``val_check_interval`` cannot be a fraction of an epoch."""
    if check_val_every_n_epoch is None and isinstance(val_check_interval, float):
        raise MisconfigurationError(
            f"with check_val_every_n_epoch=None, val_check_interval must be an int (validate every n training "
            f"batches, counted across epochs) or a time interval ('DD:HH:MM:SS', a timedelta or a dict such as "
            f"{{'minutes': 5}}); received the fraction {val_check_interval!r}. Pass an int, or set "
            f"check_val_every_n_epoch to validate by epoch.")


class ValSchedule:
    """When fit validates (see the module). ``settings()``: the fit's ``FitSettings`` now (a tuner swaps them);
    ``reduce()``: the fit's ``reduce(tensor, op)`` across the job's processes now (None: one process): with a
    time interval every rank validates once any rank's clock says it has passed (each reads its own clock)."""

    def __init__(self, settings: Callable[[], Any], reduce: Callable[[], Any] = lambda: None) -> None:
        self._settings, self._reduce = settings, reduce
        self.ready = False  # setup() ran
        self.batch: int | float | None = None  # Lightning's trainer.val_check_batch (None: time-based, or unset)
        self._last: float | None = None  # when the latest validation ended (time-based)

    @property
    def settings(self) -> Any:
        """The fit's settings."""
        return self._settings()

    def setup(self, n_batches: int | float) -> None:
        """At fit's start and after the loaders are reloaded (Lightning's ``setup_data``): the batch interval for
        ``n_batches`` batches per epoch, or the clock started. Refuses an interval the epochs cannot reach."""
        s, self.ready = self.settings, True
        if not n_batches:  # (Lightning: no training, so nothing to schedule)
            return
        if s.val_check_seconds is not None:
            self.batch, self._last = None, monotonic()
            return
        v = s.val_check_interval
        if isinstance(v, int):
            if v > n_batches and s.check_val_every_n_epoch is not None and s.limit_val_batches:
                raise MisconfigurationError(
                    f"val_check_interval={v} must be at most the number of training batches per epoch "
                    f"({n_batches}). To validate every {v} batches counted across epochs, set "
                    f"check_val_every_n_epoch=None; to turn validation off, set limit_val_batches=0.")
            self.batch = v
        elif math.isinf(n_batches):
            if v != 1.0:
                raise MisconfigurationError(
                    f"the training loader has no length (an IterableDataset), so val_check_interval cannot be the "
                    f"fraction {v!r} of an epoch; use 1.0 (the epoch's end), an int (every n batches) or a time "
                    f"interval such as {{'minutes': 5}}.")
            self.batch = math.inf
        else:
            self.batch = max(1, int(n_batches * v))

    def epoch_validates(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (from 0) validates at all (``check_val_every_n_epoch``)."""
        n = self.settings.check_val_every_n_epoch
        return n is None or (epoch + 1) % n == 0

    def due(self, batches: int, total: int, is_last: bool, timed: bool = True) -> bool:
        """Whether to validate after a batch of an epoch that validates: ``batches`` done in the epoch,
        ``total`` across epochs, ``is_last``: the epoch's last. ``timed=False``: a time interval answers no."""
        seconds = self.settings.val_check_seconds
        if seconds is not None:
            if not timed or self._last is None:
                return False
            elapsed, reduce = monotonic() - self._last >= seconds, self._reduce()
            return elapsed if reduce is None else bool(reduce(torch.tensor(float(elapsed)), "max").item() > 0)
        if self.batch is None or math.isinf(self.batch):
            return is_last
        count = total if self.settings.check_val_every_n_epoch is None else batches
        return count % self.batch == 0

    def validated(self) -> None:
        """A validation ended: a time interval counts from now."""
        if self._last is not None:
            self._last = monotonic()
