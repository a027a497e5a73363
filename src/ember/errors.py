"""Errors raised by ember. Every error about reading or writing a checkpoint is a CheckpointError."""

from __future__ import annotations


class CheckpointError(Exception):
    """A checkpoint could not be read or written. Subclasses say why.

    Args:
        *args: the message (one string), as for ``Exception``.
    """


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the path given (also a FileNotFoundError, which Lightning raises there)."""


class CheckpointCorruptError(CheckpointError):
    """The file is not a complete, intact checkpoint: truncated, bit-flipped or malformed.

    Args:
        *args: the message (one string), as for ``Exception``.
    """


class UnsafeCheckpointError(CheckpointError):
    """The file could only be loaded by running code from it (an arbitrary pickle), so it is refused.

    Args:
        *args: the message (one string), as for ``Exception``.
    """


class CheckpointVersionError(CheckpointError):
    """The file was written by a newer ember in a format version this one cannot read.

    Args:
        *args: the message (one string), as for ``Exception``.
    """


class CheckpointMismatchError(CheckpointError):
    """The checkpoint does not fit the model or training setup it is loaded into.

    Args:
        *args: the message (one string), as for ``Exception``.
    """


class MisconfigurationError(ValueError):
    """A setting or a combination of settings is invalid; the message says which and how to fix it.

    Args:
        *args: the message (one string), as for ``Exception``.
    """


class SamplerError(MisconfigurationError, TypeError):
    """A loader's sampler or batch sampler cannot be sharded across the ranks of a job (also a TypeError,
    which Lightning raises there); the message says what was expected and what to do.

    Args:
        *args: the message (one string), as for ``Exception``.
    """


class DurationTypeError(MisconfigurationError, TypeError):
    """A time limit (``Timer(duration=...)``, ``Trainer(max_time=...)``) of the wrong type, or a dict that is not
    ``datetime.timedelta``'s keywords (also a TypeError, which Lightning raises for such a dict); the message says
    what was expected and what to pass.

    Args:
        *args: the message (one string), as for ``Exception``.
    """


class NotSupportedError(MisconfigurationError, NotImplementedError):
    """A Lightning feature ember does not have: the message names it, says why, and what to use instead.

    Every such feature is listed, with its reason, in ``ember.not_supported``."""
