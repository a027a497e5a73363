"""Stop requests from the outside: SIGTERM (and SIGUSR1 where it exists) during fit.

A signal only records the request; the loop finishes the current optimizer step, saves a
checkpoint and ends fit cleanly, so ``fit(ckpt_path="last")`` in the next process continues.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None)


class StopRequests:
    """Installs the handlers for the duration of fit (main thread only) and remembers a request."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequests":
        self.signum = None
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None
