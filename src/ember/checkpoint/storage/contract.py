"""The storage contract: where checkpoint bytes live, as named objects under one root.

A ``Storage`` is a flat namespace of byte objects ("files") whose names are relative and
``/``-separated (``"epoch=3.ckpt"``, ``"run.ckpt/shard-0.safetensors"``). Every backend
(local disk, memory, fsspec object stores) implements the same small contract, and one
conformance suite (``tests/checkpoint/test_storage_conformance.py``) holds each to it:

- ``open_write(name)``: the bytes written appear under ``name`` all at once when the ``with``
  block exits cleanly (atomic commit); if the block raises, ``name`` keeps what it held before
  and nothing partial is visible to ``list``/``stat``/``open_read``.
- ``open_read(name)``: a binary file object (``read``, ``readinto``, ``seek``, ``tell``) and
  the object's size. A missing name raises ``FileNotFoundError``.
- ``list(prefix)``: committed names that start with ``prefix``, sorted; never temporaries.
- ``stat(name)``: size and modification time; ``FileNotFoundError`` when missing.
- ``delete(name)``: removes ``name`` and, if it is a folder, every name under ``name + "/"``;
  a missing name is not an error.
- ``copy(src, dst)``: ``dst`` becomes a complete copy of ``src`` atomically (a hard link or a
  server-side copy where the backend has one).
- ``local_path(name)``: a real local file path for fast paths (mmap), or None.

Names are relative and ``/``-separated; an absolute name or one with ``..``, ``.`` or empty parts
raises ``ValueError``. A folder is not an object: ``stat``/``open_read`` of a folder's name raise
``IsADirectoryError`` (or ``FileNotFoundError`` where the backend cannot tell), ``exists`` is
False, ``list(name + "/")`` shows what it holds, ``delete`` and ``copy`` act on all of it.

A checkpoint is a name inside a store: a single ``*.ckpt`` file, or a folder ``name.ckpt/``
whose metadata object is written last (it exists only once the folder is complete).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager

__all__ = ["Info", "Storage", "register_scheme", "registered"]


@dataclass(frozen=True)
class Info:
    """What a store knows about one committed object.

    Args:
        name: the object's name inside the store.
        size: its size in bytes.
        mtime: its modification time, in seconds since the epoch.
    """

    name: str
    size: int
    mtime: float  # seconds since the epoch


class Storage(abc.ABC):
    """Named byte objects under one root; see the module docstring for the contract."""

    @abc.abstractmethod
    def open_write(self, name: str) -> ContextManager[BinaryIO]:
        """A writable binary file committed atomically under ``name`` when the block exits cleanly.

        Args:
            name: the object's relative, ``/``-separated name.
        """

    @abc.abstractmethod
    def open_read(self, name: str) -> ContextManager[tuple[BinaryIO, int]]:
        """``(file, size)`` of the committed object ``name``; ``FileNotFoundError`` when missing.

        Args:
            name: the object's relative, ``/``-separated name.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Committed names that start with ``prefix``, sorted.

        Args:
            prefix: the start of the names listed ("" lists all; ``"folder/"`` a folder's contents).
        """

    @abc.abstractmethod
    def stat(self, name: str) -> Info:
        """Size and modification time of ``name``; ``FileNotFoundError`` when missing.

        Args:
            name: the object's relative, ``/``-separated name.
        """

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name`` (and everything under ``name/``); missing is fine.

        Args:
            name: the object's or folder's name.
        """

    @abc.abstractmethod
    def copy(self, src: str, dst: str) -> None:
        """Make ``dst`` a complete copy of ``src``, atomically.

        Args:
            src: the name of the object (or folder) copied.
            dst: the name of the copy; what it held before is replaced.
        """

    @abc.abstractmethod
    def describe(self, name: str = "") -> str:
        """Where ``name`` lives, for messages: a path or a URL.

        Args:
            name: the object's name ("" describes the store's root).
        """

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a committed object (a folder is not).

        Args:
            name: the object's relative, ``/``-separated name.
        """
        try:
            self.stat(name)
        except (FileNotFoundError, IsADirectoryError):  # a folder is not an object
            return False
        return True

    def local_path(self, name: str) -> Path | None:
        """A local file holding ``name`` (for mmap), or None when the store is not a local disk.

        Args:
            name: the object's relative, ``/``-separated name.
        """
        return None

    def cleanup(self) -> list[str]:
        """Remove what interrupted writers left behind, if the backend keeps anything (temporary
        objects, incomplete uploads) that it does not clean by itself; returns what was removed."""
        return []

    def child(self, name: str) -> "Storage":
        """The store rooted at the folder ``name`` inside this one.

        Args:
            name: the folder's name (leading and trailing ``/`` are ignored).
        """
        return _Prefixed(self, name.strip("/"))


class _Prefixed(Storage):
    """A view of a store under a folder name; every method delegates with the prefix added."""

    def __init__(self, base: Storage, prefix: str) -> None:
        self.base, self.prefix = base, prefix

    def _n(self, name: str) -> str:
        return f"{self.prefix}/{name}" if name else self.prefix

    def open_write(self, name: str) -> ContextManager[BinaryIO]:
        return self.base.open_write(self._n(name))

    def open_read(self, name: str) -> ContextManager[tuple[BinaryIO, int]]:
        return self.base.open_read(self._n(name))

    def list(self, prefix: str = "") -> list[str]:
        cut = len(self.prefix) + 1
        return [n[cut:] for n in self.base.list(f"{self.prefix}/{prefix}")]

    def stat(self, name: str) -> Info:
        info = self.base.stat(self._n(name))
        return Info(name, info.size, info.mtime)

    def delete(self, name: str) -> None:
        self.base.delete(self._n(name))

    def copy(self, src: str, dst: str) -> None:
        self.base.copy(self._n(src), self._n(dst))

    def describe(self, name: str = "") -> str:
        return self.base.describe(self._n(name))

    def local_path(self, name: str) -> Path | None:
        return self.base.local_path(self._n(name))


# ----------------------------------------------------------------------------- URL schemes -> backends

_SCHEMES: dict[str, Callable[[str, dict], Storage]] = {}


def register_scheme(scheme: str, factory: Callable[[str, dict], Storage]) -> None:
    """Route URLs ``scheme://...`` to ``factory(url_of_folder, storage_options)``.

    Args:
        scheme: the URL scheme (``"s3"``), or ``"default"`` for every scheme not registered.
        factory: builds the Storage from the folder's URL and the storage options; replaces an earlier one.
    """
    _SCHEMES[scheme] = factory


def registered(scheme: str) -> Callable[[str, dict], Storage] | None:
    """The factory registered for ``scheme`` (``"default"``: the one for every other scheme), or None.

    Args:
        scheme: the URL scheme.
    """
    return _SCHEMES.get(scheme)
