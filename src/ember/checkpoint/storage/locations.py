"""The storage seam: a checkpoint location (a local path or a URL) -> the store of its folder and
its name there. The contract every store implements is in ``contract.py`` (re-exported here);
local disk and memory stores are in ``storage.py``, fsspec URL stores in ``remote.py``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Iterator

from ember.checkpoint.storage.contract import Info, Storage, register_scheme, registered
from ember.checkpoint.storage.local import LocalStorage
from ember.errors import CheckpointError, CheckpointNotFoundError, MisconfigurationError

__all__ = ["Info", "Storage", "open_checkpoint", "open_store", "reading", "register_scheme", "registered", "resolve"]


def _scheme(location: str) -> str | None:
    head, sep, _ = location.partition("://")
    return head.lower() if sep and head.isidentifier() else None


def open_store(location: str | os.PathLike, storage_options: dict | None = None) -> Storage:
    """The store rooted at the folder ``location`` (a local path or a URL)."""
    text = os.fspath(location)
    scheme = _scheme(text)
    if scheme is not None and registered(scheme) is None and registered("default") is None:
        import ember.checkpoint.storage.fsspec  # noqa: F401  registers the fsspec backend as "default"
    if scheme is None or scheme == "file" and registered("default") is None:
        return LocalStorage(text[len("file://"):] if scheme == "file" else text)
    factory = registered(scheme) or registered("default")
    if factory is None:
        raise MisconfigurationError(f"no storage backend for {scheme}:// URLs (received {text!r}).")
    return factory(text, dict(storage_options or {}))


def resolve(location: str | os.PathLike, storage_options: dict | None = None) -> tuple[Storage, str]:
    """A file location -> (the store of its folder, its name in that store)."""
    text = os.fspath(location).rstrip("/") or "/"
    if _scheme(text) is None:
        p = Path(text)
        return open_store(p.parent if str(p.parent) else ".", storage_options), p.name
    folder, _, name = text.rpartition("/")
    return open_store(folder, storage_options), name


@contextlib.contextmanager
def reading(location: str | os.PathLike, storage_options: dict | None = None) -> Iterator[tuple[BinaryIO, int]]:
    """Open a file location for reading: ``(file, size)``."""
    store, name = resolve(location, storage_options)
    with store.open_read(name) as handle:
        yield handle


@contextlib.contextmanager
def open_checkpoint(store: Storage, name: str, label: str | None = None) -> Iterator[tuple[BinaryIO, int]]:
    """``store.open_read(name)`` for a checkpoint: a missing name, a folder or an unreadable object
    becomes a CheckpointError naming ``label`` (default: ``store.describe(name)``)."""
    label = store.describe(name) if label is None else label
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(store.open_read(name))
        except IsADirectoryError:
            raise CheckpointError(f"no checkpoint at {label}: it is a directory; "
                                  "pass the checkpoint file inside it") from None
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"no checkpoint at {label}: the file does not exist. "
                                          "Check the path.") from None
        except OSError as e:
            raise CheckpointError(f"cannot open checkpoint {label}: {e.strerror or e}") from None
        yield handle
