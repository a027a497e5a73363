"""Proof of authorship before a delete: a checkpoint manager deletes (or overwrites) a name in its
store only when the checkpoint there says, in its own header or sharded metadata, that this run's
lineage wrote it under that very name.

Every checkpoint a manager writes carries, in its ``callbacks`` state, the manager's state: its
``lineage`` (a random id made when the run starts and kept across resumes) and ``name`` (the name the
file was written as; ``None`` in a checkpoint saved by hand). A user's copy of such a file under
another name, a folder that is not a committed ember sharded checkpoint, a file of another run, or
anything that cannot be read is not provably this run's, so it is left alone.
"""

from __future__ import annotations

import re
from typing import Any

from ember.checkpoint.format import container, decode
from ember.checkpoint.format.header import MAX_HEADER
from ember.checkpoint.sharded import metadata as _meta
from ember.checkpoint.storage.contract import Storage
from ember.errors import CheckpointError

LINEAGE_RE = re.compile(r"[0-9a-f]{32}")


def _tree_of(store: Storage, name: str) -> Any:
    """The state tree of the single-file checkpoint or sharded folder ``name``; raises on anything else."""
    try:
        with store.open_read(name) as (f, size):
            return container.read_header_stream(f, size, store.describe(name), verify=True)["tree"]
    except (IsADirectoryError, FileNotFoundError):  # a folder (FileNotFoundError where a store cannot tell)
        pass
    with store.open_read(f"{name}/{_meta.METADATA}") as (f, size):  # a folder: only a committed sharded one
        if size > MAX_HEADER:
            raise CheckpointError(f"{store.describe(name)}: its metadata is too large")
        return _meta.parse(f.read(MAX_HEADER + 1), store.describe(name)).tree


def written_by(store: Storage, name: str, lineage: str) -> bool:
    """Whether the checkpoint at ``name`` says the run ``lineage`` wrote it as ``name``. Never raises."""
    try:
        if store.local_path(name) is not None and store.local_path(name).is_symlink():
            return False  # the link's target may be anywhere
        state = decode.decode(_tree_of(store, name), None)
    except (CheckpointError, OSError, ValueError, RecursionError):
        return False
    callbacks = state.get("callbacks")
    if not isinstance(callbacks, dict):
        return False
    return any(isinstance(s, dict) and s.get("lineage") == lineage and s.get("name") == name
               for s in callbacks.values())
