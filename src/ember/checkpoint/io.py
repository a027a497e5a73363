"""Save and load a checkpoint dict: encode (codec + file format) and store (atomic commit) composed.

Path-based (``save_checkpoint``, ``load_checkpoint``: a local path or a URL) and store-based
(``load_from``, ``header_in``, ``verify_in``: a name inside a ``Storage``) entry points.
"""

from __future__ import annotations

import os
from typing import Any

from ember.checkpoint.format import codec, container
from ember.checkpoint.reader import load_any, load_in
from ember.checkpoint.sharded import objects
from ember.checkpoint.sharded.full import read_full
from ember.checkpoint.storage.locations import Storage, open_checkpoint, resolve
from ember.checkpoint.writer import write_file

__all__ = ["save_checkpoint", "load_checkpoint", "load_from", "header_in", "verify_in"]


def save_checkpoint(state: dict, path: str | os.PathLike, *, storage_options: dict | None = None) -> str:
    """Write ``state`` to ``path`` (a local path or a URL) atomically; returns where it was written.
    An unstorable value fails before any byte is written.

    Args:
        state: the checkpoint dict (tensors, numbers, strings, lists, dicts... nested).
        path: the destination: a local file path or a URL (``s3://...``, ``memory://...``).
        storage_options: options for the backend of a URL (credentials, endpoint); unused for a local path.
    """
    tree, tensors = codec.flatten(state)
    return write_file(resolve(path, storage_options), tree, tensors, progress=True)


def load_checkpoint(path: str | os.PathLike, map_location: Any = None, *, verify: bool = True,
                    mmap: bool | None = None, storage_options: dict | None = None) -> dict:
    """Read a checkpoint (a local path or a URL) without running code from it; every byte's checksum
    is verified by default, before anything is returned.

    A local file is mapped copy-on-write and its tensors view the mapping (no copy; a write to a
    loaded tensor stays in this process; deleting or replacing the file later leaves them as they
    are). A program that rewrites the file *in place* while such tensors live (``torch.save`` to the
    same path truncates it) pulls the pages from under them: re-save with ``save_checkpoint`` (a new
    file renamed over the name), or load with ``mmap=False``. ``verify=False`` maps lazily (bytes
    paged in on use); ``mmap=False`` reads every tensor into its own memory instead. URLs are read.
    ``storage_options`` go to the backend of a URL.

    A local folder is read as a sharded checkpoint (``sharded.read_full``: every tensor whole, every
    byte verified; ``verify``/``mmap`` do not apply): the same dict a single-file checkpoint gives.

    Args:
        path: the checkpoint: a local file or sharded folder, or a URL.
        map_location: the device tensors go to: None (the CPU), a str or a ``torch.device``; another type
            raises ``TypeError``.
        verify: check every byte's checksum before returning (default True).
        mmap: None or True map a local file copy-on-write; False reads every tensor into its own memory.
        storage_options: options for the backend of a URL (credentials, endpoint).
    """
    if "://" not in os.fspath(path) and os.path.isdir(path):
        return read_full(path, map_location=map_location)
    if "://" in os.fspath(path):
        store, name = resolve(path, storage_options)
        if objects.is_url(path) and (objects.committed(store, name) or store.list(f"{name}/")):
            # a sharded folder at a URL (one without its metadata is refused, saying so)
            with objects.staged(os.fspath(path), storage_options) as folder:
                return read_full(folder, map_location=map_location)
    return load_any(path, map_location=map_location, verify=verify, mmap=mmap, storage_options=storage_options)


def load_from(store: Storage, name: str, map_location: Any = None, verify: bool = True, *,
              mmap: bool | None = None) -> dict:
    """The checkpoint dict stored as ``name`` in ``store`` (any kind ``load_checkpoint`` reads).

    Raises a CheckpointError subclass naming ``store.describe(name)`` for a missing, corrupt or unsafe file.
    A local folder is read as a sharded checkpoint (``sharded.read_full``), as ``load_checkpoint`` does.

    Args:
        store: the Storage holding the checkpoint.
        name: the checkpoint's name inside ``store``.
        map_location: where tensors go, as in ``load_checkpoint``.
        verify: check every byte's checksum before returning.
        mmap: map a local file copy-on-write, as in ``load_checkpoint``.
    """
    local = store.local_path(name)
    if local is not None and local.is_dir():
        return read_full(local, map_location=map_location)
    if local is None:
        if objects.committed(store, name):  # a sharded folder in an object store
            with objects.staged_in(store, name) as folder:
                return read_full(folder, map_location=map_location)
    return load_in(store, name, map_location=map_location, verify=verify, mmap=mmap)


def header_in(store: Storage, name: str, *, verify: bool = True) -> dict:
    """``container.read_header`` of the object ``name`` in ``store``: the header only, checked
    (structure, checksum, state tree), tensors not read.

    Args:
        store: the Storage holding the checkpoint.
        name: the checkpoint's name inside ``store``.
        verify: check the header's checksum and state tree (default True).
    """
    with open_checkpoint(store, name) as (f, size):
        return container.read_header_stream(f, size, store.describe(name), verify=verify)


def verify_in(store: Storage, name: str) -> None:
    """``container.verify_file`` of the object ``name`` in ``store``: every byte against its checksum
    and the state tree as loading checks it; CheckpointError naming ``store.describe(name)`` on failure.

    Args:
        store: the Storage holding the checkpoint.
        name: the checkpoint's name inside ``store``.
    """
    with open_checkpoint(store, name) as (f, size):
        container.verify_stream(f, size, store.describe(name))
