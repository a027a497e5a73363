"""Load any checkpoint file: ember ``.ckpt``, plain safetensors, or ``torch.save`` (weights-only)."""

from __future__ import annotations

from typing import Any

from ember.checkpoint import codec, fileformat
from ember.checkpoint.foreign import checked_sniff, load_foreign
from ember.errors import CheckpointCorruptError

__all__ = ["load_any"]


def load_any(path: Any, map_location: Any = None, verify: bool = True, mmap: bool = False) -> dict:
    """Load the checkpoint at ``path`` as a state dict, whatever its kind.

    Ember and safetensors files go through ``fileformat.read`` + ``codec.unflatten``
    (``verify``/``mmap`` as in ``fileformat.read``); anything else through ``load_foreign``.
    Raises a CheckpointError subclass for a missing, unreadable, corrupt or unsafe file.
    """
    kind = checked_sniff(path)
    if kind not in ("ember", "safetensors"):
        return load_foreign(path, map_location=map_location, kind=kind)
    tree, tensors = fileformat.read(path, map_location=map_location, verify=verify, mmap=mmap)
    try:
        return codec.unflatten(tree, tensors)
    except CheckpointCorruptError as e:
        raise CheckpointCorruptError(f"corrupt checkpoint {path}: {e}") from None
