"""Renames that keep a name holding a whole checkpoint at every instant: ``exchange`` swaps two names
atomically (Linux ``renameat2(RENAME_EXCHANGE)``), ``swap_in`` puts a new file or folder at a taken name."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from ember.checkpoint.storage.temporaries import temp_name

_RENAME_EXCHANGE, _AT_FDCWD = 2, -100
_LIBC: list = []


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the names ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``, any two of file
    and folder); False where the system or filesystem cannot."""
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True))
        except OSError:
            _LIBC.append(None)
    fn = getattr(_LIBC[0], "renameat2", None) if _LIBC[0] is not None else None
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(tmp: Path, target: Path) -> Path:
    """Put ``tmp`` at the existing name ``target`` (a file or folder, either way); returns where the old
    one now is, at a temporary name, for the caller to remove. Atomic where ``exchange`` works; else the
    old one is renamed aside first and put back if the second rename fails."""
    if exchange(tmp, target):
        return tmp
    old = target.parent / temp_name(target.name)
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        os.rename(old, target)  # the old one back at its name
        raise
    return old
