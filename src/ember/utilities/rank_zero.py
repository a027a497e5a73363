"""Messages printed once per job, by the global-zero process (Lightning's ``rank_zero_*`` helpers)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from ember.distributed import rank_zero_only

log = logging.getLogger("ember")


@rank_zero_only
def rank_zero_info(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    log.info(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_debug(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    log.debug(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_warn(message: str | Warning, stacklevel: int = 4, category: type[Warning] = UserWarning,
                   **kwargs: Any) -> None:
    warnings.warn(message, category=category, stacklevel=stacklevel, **kwargs)
