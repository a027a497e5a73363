"""Messages printed once per job, by the global-zero process (Lightning's ``rank_zero_*`` helpers)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from ember.distributed import rank_zero_only

log = logging.getLogger("ember")
if log.level == logging.NOTSET:  # as Lightning sets its logger at import: INFO messages are emitted by default
    log.setLevel(logging.INFO)


def console() -> logging.Logger:
    """The ``ember`` logger, set up as Lightning sets up its own: at INFO unless a level was set on it (so the
    messages reach ``caplog`` without ``set_level``, as Lightning's do), with a handler writing to stderr unless
    the program configured logging itself (a root handler: the messages propagate there)."""
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not log.handlers and not logging.getLogger().hasHandlers():
        log.addHandler(logging.StreamHandler())
        log.propagate = False
    return log


@rank_zero_only
def rank_zero_info(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """Log at INFO on the ``ember`` logger (``console()``), on global rank 0 only.

    Args:
        *args: the message and its ``%`` arguments.
        stacklevel: which caller the record names.
        **kwargs: passed to ``Logger.info``.
    """
    console().info(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_debug(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    log.debug(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_warn(message: str | Warning, stacklevel: int = 4, category: type[Warning] = UserWarning,
                   **kwargs: Any) -> None:
    warnings.warn(message, category=category, stacklevel=stacklevel, **kwargs)


class LightningDeprecationWarning(DeprecationWarning):
    """A feature is deprecated and will be removed; shown by default, unlike a plain DeprecationWarning."""


warnings.simplefilter("default", category=LightningDeprecationWarning)


@rank_zero_only
def rank_zero_deprecation(message: str | Warning, stacklevel: int = 5, **kwargs: Any) -> None:
    """Warn once per job (on global rank 0) that something is deprecated.

    Args:
        message: what is deprecated and what replaces it.
        stacklevel: how many frames up the warning points.
        **kwargs: passed to ``warnings.warn``; ``category`` defaults to LightningDeprecationWarning.
    """
    kwargs.setdefault("category", LightningDeprecationWarning)
    warnings.warn(message, stacklevel=stacklevel, **kwargs)


__all__ = ["LightningDeprecationWarning", "console", "rank_zero_debug", "rank_zero_deprecation", "rank_zero_info",
           "rank_zero_only", "rank_zero_warn"]
