"""Load any checkpoint file: ember ``.ckpt``, plain safetensors, or ``torch.save`` (weights-only)."""

from __future__ import annotations

from typing import Any, BinaryIO

from ember.checkpoint.format import codec, container
from ember.checkpoint.format.torch_files import load_foreign_stream, sniff_stream
from ember.checkpoint.storage.locations import Storage, open_checkpoint, resolve
from ember.errors import CheckpointCorruptError

__all__ = ["load_any", "load_stream", "load_in"]


def load_stream(f: BinaryIO, size: int, label: str, map_location: Any = None, verify: bool = True,
                mmap: bool = False) -> dict:
    """The state dict in an open binary file ``f`` of ``size`` bytes (at its start), whatever its kind.

    Ember and safetensors files go through ``container.read_stream`` + ``codec.unflatten``
    (``verify``/``mmap`` as in ``container.read``); anything else through ``load_foreign_stream``.
    Raises a CheckpointError subclass naming ``label`` for a corrupt or unsafe file.
    """
    kind = sniff_stream(f, size)
    if kind not in ("ember", "safetensors"):
        return load_foreign_stream(f, size, label, map_location=map_location, kind=kind)
    tree, tensors = container.read_stream(f, size, label, map_location=map_location, verify=verify, mmap=mmap)
    try:
        return codec.unflatten(tree, tensors)
    except CheckpointCorruptError as e:
        raise CheckpointCorruptError(f"corrupt checkpoint {label}: {e}") from None


def load_in(store: Storage, name: str, map_location: Any = None, verify: bool = True, mmap: bool | None = None,
            label: str | None = None) -> dict:
    """``load_stream`` of the object ``name`` in ``store``: mapped where the store is a local disk
    (unless ``mmap=False``), read otherwise."""
    label = store.describe(name) if label is None else label
    with open_checkpoint(store, name, label) as (f, size):
        local = mmap is not False and store.local_path(name) is not None
        return load_stream(f, size, label, map_location=map_location, verify=verify, mmap=local)


def load_any(path: Any, map_location: Any = None, verify: bool = True, mmap: bool | None = None, *,
             storage_options: dict | None = None) -> dict:
    """Load the checkpoint at ``path`` (a local path or a URL) as a state dict, whatever its kind.

    ``storage_options`` go to the backend of a URL (credentials, endpoint).
    Raises a CheckpointError subclass for a missing, unreadable, corrupt or unsafe file.
    """
    store, name = resolve(path, storage_options)
    return load_in(store, name, map_location=map_location, verify=verify, mmap=mmap, label=str(path))
