"""The tqdm progress bar shown during fit: epoch, step, loss and prog_bar metrics."""

from __future__ import annotations

import sys
from typing import Any


class _NoBar:
    def update(self, *args: Any) -> None: ...
    def close(self) -> None: ...


class _EpochBar:
    REFRESH_EVERY = 10  # batches between postfix refreshes (reading the loss syncs the device)

    def __init__(self, epoch: int, total: int | None, initial: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=initial, desc=f"Epoch {epoch}", file=sys.stderr,
                         dynamic_ncols=True, leave=True, mininterval=0.2)
        self._n = 0

    def update(self, step: int, loss, metrics: dict[str, float], prog_bar: set[str]) -> None:
        self._bar.update(1)
        self._n += 1
        if self._n % self.REFRESH_EVERY == 1:
            post = {"step": step}
            if loss is not None:
                post["loss"] = f"{float(loss):.4g}"
            for k in prog_bar:
                if k in metrics:
                    post[k] = f"{metrics[k]:.4g}"
            self._bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        self._bar.close()


class ProgressBar:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def start_epoch(self, epoch: int, total: int | None, initial: int):
        return _EpochBar(epoch, total, initial) if self.enabled else _NoBar()
