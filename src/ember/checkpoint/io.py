"""Save and load a checkpoint dict: encode (codec + file format) and store (atomic commit) composed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ember.checkpoint.storage import atomic_write
from ember.errors import CheckpointCorruptError, CheckpointError


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict:
    """Read a checkpoint without running code from it."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}: the file does not exist. Check the path.")
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder, not a checkpoint file; give the path of a .ckpt file.")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes a CheckpointError
        raise CheckpointCorruptError(f"could not read the checkpoint {p}: {e}") from e


def _candidates(dirs) -> list[Path]:
    found: dict[Path, None] = {}
    for d in dirs:
        d = Path(d)
        if d.is_dir():
            for p in d.glob("*.ckpt"):
                if p.is_file():
                    found[p.resolve()] = None
    return list(found)


def find_last_checkpoint(dirs) -> Path | None:
    """The newest checkpoint in ``dirs`` that verifies (by global step, then modification time).

    A corrupt or incomplete newer file is skipped with a warning naming it.
    """
    import warnings

    ranked = []
    for p in _candidates(dirs):
        try:
            ckpt = load_checkpoint(p, map_location="cpu")
        except CheckpointError as e:
            warnings.warn(f"skipping {p}: it does not verify ({e})", stacklevel=2)
            continue
        if "loops" not in ckpt:
            continue  # weights-only files cannot resume
        ranked.append((int(ckpt.get("global_step", 0)), p.stat().st_mtime_ns, p))
    return max(ranked)[2] if ranked else None
