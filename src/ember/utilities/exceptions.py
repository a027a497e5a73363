"""``lightning.pytorch.utilities.exceptions``: Lightning's exception names.

``MisconfigurationException`` is ember's :class:`~ember.errors.MisconfigurationError` (one class, two
names), so ``pytest.raises(MisconfigurationException)`` catches every invalid-setting error ember raises.
"""

from __future__ import annotations

from ember.errors import MisconfigurationError, NotSupportedError

MisconfigurationException = MisconfigurationError


class SIGTERMException(SystemExit):
    """Raised in a process that received SIGTERM, to end the run (a SystemExit, so ``except Exception``
    does not swallow it)."""


__all__ = ["MisconfigurationException", "NotSupportedError", "SIGTERMException"]
