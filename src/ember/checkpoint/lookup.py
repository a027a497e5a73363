"""Finding checkpoints in stores: the names that are checkpoints, and the newest full one that verifies
(``"last"``). ``resume.locate`` turns a ``ckpt_path`` into a location with it."""

from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

from ember.checkpoint.format import codec
from ember.checkpoint.io import header_in, verify_in
from ember.compat import EXTENSION
from ember.checkpoint.sharded import full as sharded
from ember.checkpoint.sharded import layout as sharded_layout
from ember.checkpoint.sharded import metadata as sharded_metadata
from ember.checkpoint.storage.locations import Storage
from ember.errors import CheckpointError
from ember.checkpoint.sharded import objects as sharded_objects


def checkpoint_names(store: Storage) -> list[str]:
    """The names of the checkpoints directly in ``store``: single ``*.ckpt`` files, and ``*.ckpt``
    folders holding a sharded checkpoint's metadata (complete or not, see ``_is_folder``; in an object
    store the metadata object is the commit, so a folder without it is never listed)."""
    names = []
    for n in store.list(""):
        head, slash, rest = n.partition("/")
        if not slash and n.endswith(EXTENSION):
            names.append(n)
        elif rest == sharded_layout.METADATA and head.endswith(EXTENSION):
            names.append(head)
    return names


def _is_folder(store: Storage, name: str) -> bool:
    local = store.local_path(name)
    if local is None:
        return sharded_objects.committed(store, name)
    return local.is_dir()


def _state_tree(store: Storage, name: str) -> tuple[Any, float] | None:
    """The state tree and modification time of a file's header or a sharded folder's metadata; None for
    a file that is not ember's."""
    if _is_folder(store, name):
        folder = store.local_path(name)
        if folder is None:  # an object store: its metadata object alone
            with sharded_objects.staged_in(store, name, files=False) as staged:
                meta = sharded_metadata.read(staged)
            return meta.tree, store.stat(f"{name}/{sharded_layout.METADATA}").mtime
        meta = sharded_metadata.read(folder)
        return meta.tree, os.stat(folder / sharded_layout.METADATA).st_mtime
    header = header_in(store, name)
    if header["kind"] != "ember":
        return None
    return header["tree"], store.stat(name).mtime


def _verify(store: Storage, name: str) -> None:
    if _is_folder(store, name):
        local = store.local_path(name)
        if local is None:
            with sharded_objects.staged_in(store, name) as staged:
                sharded.verify_sharded(staged)
        else:
            sharded.verify_sharded(local)
    else:
        verify_in(store, name)


def _resume_rank(store: Storage, name: str) -> tuple[int, float] | None:
    """(global step, modification time) of a full, resumable ember checkpoint, from its header (or a
    sharded folder's metadata) alone; None for weights-only and foreign files; CheckpointError for one
    that cannot be a run's state."""
    found = _state_tree(store, name)
    if found is None:
        return None
    tree, mtime = found
    top = codec.unflatten(tree, None)
    if "loops" not in top:
        return None  # weights only: cannot resume
    step = top.get("global_step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"its global_step is {type(step).__name__} {step!r:.40}, not an int >= 0")
    loops = top["loops"]
    if not isinstance(loops, dict) or not isinstance(loops.get("fit"), dict):
        raise CheckpointError("it has no loop position (loops['fit'])")
    return step, mtime


def find_last(stores: Sequence[Storage]) -> tuple[Storage, str] | None:
    """The newest full checkpoint in ``stores`` that verifies (by global step, then modification time, then a
    ``last*`` name: ``last.ckpt``, a hard link to the newest top-k file, names it as Lightning's "last" does).

    A corrupt, incomplete or malformed newer file is skipped with a warning naming it; so is a sharded
    folder whose metadata is damaged. A folder without metadata (a save that never completed) is not a
    checkpoint and is not considered at all."""
    ranked = []
    for store in stores:
        for name in checkpoint_names(store):
            try:
                rank = _resume_rank(store, name)
            except CheckpointError as e:
                warnings.warn(f"skipping {store.describe(name)}: {e}", stacklevel=4)
                continue
            if rank is not None:
                ranked.append(((*rank, name.rpartition("/")[2].startswith("last")), store, name))
    for _, store, name in sorted(ranked, key=lambda r: r[0], reverse=True):
        try:
            _verify(store, name)
        except CheckpointError as e:
            warnings.warn(f"skipping {store.describe(name)}: {e}", stacklevel=4)
            continue
        return store, name
    return None
