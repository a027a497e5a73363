"""Making a written folder the checkpoint at its name, so that a kill at any instant leaves a
complete checkpoint there (or, before the first save, nothing).

A save writes into a fresh temporary folder next to the target (named as ``temporaries.py`` says, so
that a fit's storage ``cleanup()`` removes it once its writer is gone). Once the folder is committed
(its ``metadata.json`` written last), it is published:

* no target yet: one ``rename`` (atomic);
* a target exists (``last.ckpt/`` saved again): Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two
  names atomically, then the old checkpoint, now at the temporary name, is removed. A kill before the
  swap leaves the old checkpoint at the name; after it, the new one.
* where the exchange is not available (other systems, some filesystems): the old target is renamed to
  a temporary name, the new folder to the target, the old one removed. A kill between the two renames
  leaves no checkpoint at the name but both complete ones at temporary names (moved back by hand;
  cleanup keeps them while nothing is at the name, ``temporaries._only_copy``): a known gap of this
  fallback only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ember.checkpoint.storage.local import fsync_dir
from ember.checkpoint.storage.renames import swap_in
from ember.checkpoint.storage.temporaries import clean_stale_temp_files, discard, temp_name
from ember.errors import CheckpointError

def new_temp_folder(target: Path) -> Path:
    """A fresh, empty temporary folder next to ``target`` (stale temporaries there are removed first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"cannot save a sharded checkpoint to {target}: it is a file; choose a folder name "
                              "(e.g. last.ckpt) that is not taken by a single-file checkpoint, or delete the file")
    clean_stale_temp_files(target.parent)
    tmp = target.parent / temp_name(target.name)
    tmp.mkdir()
    return tmp


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def publish(tmp: Path, target: Path) -> None:
    """Put the committed folder ``tmp`` at ``target``, replacing what was there (see the module docstring)."""
    old = None
    try:
        if not os.path.lexists(target):
            os.rename(tmp, target)
        else:
            old = swap_in(tmp, target)  # the old checkpoint, now at a temporary name
        fsync_dir(target.parent)
    except OSError as e:
        raise CheckpointError(f"could not put the sharded checkpoint in place at {target}: {e}; the previous one, "
                              "if any, is untouched") from e
    if old is not None:  # the new checkpoint is in place: the old one is removed on a background thread
        discard(old)
