"""Sharded checkpoint folders in the command line: ``inspect``, ``verify`` and ``ls`` rows for a
``name.ckpt/`` folder, and ``ember ckpt consolidate``. A folder without intact metadata is reported
as incomplete: it is never a checkpoint."""

from __future__ import annotations

import os
import sys

from ember.checkpoint.sharded import objects
from ember.checkpoint.sharded.full import consolidate, folder_summary, verify_sharded
from ember.checkpoint.sharded.layout import METADATA
from ember.checkpoint.sharded.objects import is_sharded_at_url
from ember.checkpoint.storage.locations import resolve
from ember.cli.text import escape, say
from ember.errors import CheckpointError

KIND = "ember-sharded"


def is_folder(path: str) -> bool:
    """A local folder, or a URL naming a committed sharded folder in an object store."""
    return os.path.isdir(path) if "://" not in path else is_sharded_at_url(path)


def _incomplete(path: str, e: CheckpointError) -> str:
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, METADATA)):
        return f"incomplete, not a checkpoint: it has no {METADATA} (a save that never completed)"
    return str(e)


def folder_header(path: str) -> dict:
    """What a folder's metadata says, shaped like ``fileformat.read_header``'s answer (plus ``ranks``,
    ``rank_files``, ``mtime``); CheckpointError (saying so when it is incomplete) otherwise."""
    try:
        with objects.local(path, files=False) as local:  # a URL: its metadata object, copied here
            s = folder_summary(local, rank_files=not objects.is_url(path))
        if objects.is_url(path):
            store, name = resolve(path)
            s["metadata_mtime"] = store.stat(f"{name}/{METADATA}").mtime
    except CheckpointError as e:
        raise CheckpointError(_incomplete(path, e)) from None
    return {"path": path, "kind": KIND, "format_version": 1, "ember_version": s["ember_version"],
            "file_size": sum(s["files"].values()), "tree": s["tree"], "tensors": s["tensors"],
            "ranks": s["world_size"], "rank_files": len(s["files"]), "mtime": s["metadata_mtime"]}


def verify_folder(path: str) -> tuple[bool, str]:
    try:
        with objects.local(path) as local:  # a URL: the folder copied here, then every byte verified
            verify_sharded(local)
    except CheckpointError as e:
        return False, _incomplete(path, e)
    return True, "every byte verified (sharded folder)"


def consolidate_command(src: str, dst: str) -> int:
    try:
        with objects.local(src) as local:  # a URL: the folder copied here first
            where = consolidate(local, dst)
    except CheckpointError as e:
        print(escape(f"ember: error: {e}"), file=sys.stderr)
        return 1
    say(f"wrote {where} (verified)")
    return 0
