"""The tqdm progress bar shown during fit: epoch, step, loss and prog_bar metrics."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from tqdm.auto import tqdm


class _NoBar:
    def update(self, *args: Any) -> None: ...
    def close(self) -> None: ...


class _EvalBar:
    """A sanity-check, validation, test or prediction pass over one loader (Lightning's
    ``Validation DataLoader 0``): drawn below the epoch's bar and cleared when done."""

    def __init__(self, desc: str, total: int | None) -> None:
        self._bar = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False, mininterval=0.2)

    def update(self, *args: Any) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class _EpochBar:
    EVERY = 16  # batches per redraw check: tqdm and reading the loss (a device sync) cost per call
    INTERVAL = 0.2  # seconds between redraws at most, as tqdm's mininterval: a faster flush is never shown

    def __init__(self, epoch: int, total: int | None, initial: int) -> None:
        self._bar = tqdm(total=total, initial=initial, desc=f"Epoch {epoch}", file=sys.stderr,
                         dynamic_ncols=True, leave=True, mininterval=0.2)
        self._pending = self._since = 0
        self._shown = -math.inf

    def update(self, step: int, loss, metrics: dict, prog_bar: set[str]) -> None:
        self._pending += 1
        self._since += 1
        if self._since < self.EVERY:
            return
        self._since = 0
        now = time.monotonic()
        if now - self._shown >= self.INTERVAL:
            self._shown = now
            self._flush(step, loss, metrics, prog_bar)

    def _flush(self, step: int, loss, metrics: dict, prog_bar: set[str]) -> None:
        post = {"step": step}
        if loss is not None:
            post["loss"] = f"{float(loss):.4g}"
        for k in prog_bar:
            if k in metrics:
                post[k] = f"{float(metrics[k]):.4g}"
        self._bar.set_postfix(post, refresh=False)
        self._bar.update(self._pending)
        self._pending = 0

    def close(self) -> None:
        if self._pending:
            self._bar.update(self._pending)
        self._bar.close()


class FitBar:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def start_epoch(self, epoch: int, total: int | None, initial: int):
        return _EpochBar(epoch, total, initial) if self.enabled else _NoBar()

    def start_eval(self, title: str, dataloader_idx: int, total: int | None):
        """The bar of one loader's evaluation pass (``title``: "Sanity Checking", "Validation", ...)."""
        return _EvalBar(f"{title} DataLoader {dataloader_idx}", total) if self.enabled else _NoBar()
