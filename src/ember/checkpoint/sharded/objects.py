"""Sharded checkpoint folders at URLs (``s3://``, ``gs://``, ``memory://`` ...): object stores have no
rename, so the folder is committed by the order of its writes, through the ``Storage`` interface.

A save (collective, every rank):

1. rank 0 un-commits what the name holds: ``name/metadata.json`` is deleted first (from then on the
   name is no checkpoint), then every other object under ``name/``;
2. every rank writes its rank file into a private local temporary folder and uploads it as
   ``name/rank-NNNNN.safetensors`` with the store's ``open_write`` (S3: a multipart upload, which
   appears whole when completed and never in part);
3. DCP gathers every rank's write results on rank 0, which checks that each rank's object is in the
   store with the size that rank wrote, then writes ``name/metadata.json`` (one PUT): the commit.

A kill before step 3 leaves rank objects without metadata: never a checkpoint (never listed, never
"last", refused by every reader), removed by the next save at that name or by the store's
``cleanup()`` once stale. Re-saving an existing name (rare: the managers save new names and copy
``last``) has no checkpoint at that name until the new one is committed.

Reads go through a local staging copy (``staged``): ``metadata.json`` first (no metadata, no
checkpoint), then the rank files it lists, each downloaded whole into a temporary folder that is
removed afterwards; every byte is then verified by the local reader.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch.distributed as dist

from ember.checkpoint.sharded import metadata as _meta
from ember.checkpoint.sharded.layout import METADATA, RANK_FILE_RE
from ember.checkpoint.storage.contract import Storage
from ember.checkpoint.storage.locations import resolve
from ember.checkpoint.storage.temporaries import STALE_AFTER_S
from ember.errors import CheckpointError

COPY_BUFFER = 8 << 20


def is_url(location: str | os.PathLike) -> bool:
    head, sep, _ = os.fspath(location).partition("://")
    return bool(sep) and head.isidentifier() and head.lower() != "file"


def committed(store: Storage, name: str) -> bool:
    """Whether ``name`` in ``store`` is a committed sharded folder (its metadata object exists)."""
    return store.exists(f"{name}/{METADATA}")


def is_sharded_at_url(location: str | os.PathLike, storage_options: dict | None = None) -> bool:
    """Whether ``location`` is a URL naming a committed sharded folder. Never raises."""
    if not is_url(location):
        return False
    try:
        return committed(*resolve(os.fspath(location), storage_options))
    except (OSError, ValueError, CheckpointError):
        return False


def uncommit(store: Storage, name: str) -> None:
    """Make ``name`` no checkpoint, then remove what it held: the metadata object first."""
    store.delete(f"{name}/{METADATA}")
    store.delete(name)


def remove_uncommitted(store: Storage, older_than: float = STALE_AFTER_S) -> list[str]:
    """Remove the ``*.ckpt/`` folders directly in ``store`` that hold rank files but no metadata object
    (saves killed before their commit) and whose newest object is older than ``older_than`` seconds
    (a save in progress elsewhere is left alone). Returns the names removed."""
    now = time.time()
    newest: dict[str, float] = {}
    marked: set[str] = set()
    for n in store.list(""):
        head, slash, rest = n.partition("/")
        if not slash or not head.endswith(".ckpt") or "/" in rest:
            continue
        if rest == METADATA:
            marked.add(head)
        elif RANK_FILE_RE.fullmatch(rest):
            with contextlib.suppress(FileNotFoundError):
                newest[head] = max(newest.get(head, 0.0), store.stat(n).mtime)
    removed = []
    for head, mtime in sorted(newest.items()):
        if head not in marked and now - mtime >= older_than:
            store.delete(head)
            removed.append(head)
    return removed


def _from_rank0(value: str, group) -> str:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def save_to_store(tensors: dict, tree, location: str, *, storage_options: dict | None, process_group,
                  save) -> None:
    """Steps 1-3 of the module docstring; ``save(writer)`` runs DCP's save with the given writer."""
    from ember.checkpoint.sharded.dcp_writer import ShardWriter  # deferred: imports torch.distributed.checkpoint

    store, name = resolve(location, storage_options)
    where = store.describe(name)
    error = ""
    if _rank() == 0:
        try:
            uncommit(store, name)
        except (OSError, CheckpointError) as e:
            error = f"cannot save a sharded checkpoint at {where}: {e}"
    error = _from_rank0(error, process_group)
    if error:
        raise CheckpointError(error)
    staging = Path(tempfile.mkdtemp(prefix="ember-sharded-upload-"))
    try:
        save(ShardWriter(staging, tree, store=(store, name)))
    except BaseException:
        if _rank() == 0:
            with contextlib.suppress(Exception):
                uncommit(store, name)  # no metadata was written; the rank objects go too (best effort)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(store: Storage, name: str, path: Path) -> None:
    with store.open_read(name) as (src, _size), open(path, "wb") as dst:
        shutil.copyfileobj(src, dst, COPY_BUFFER)


@contextlib.contextmanager
def staged(location: str, storage_options: dict | None = None, *, files: bool = True) -> Iterator[Path]:
    """A local copy of the sharded folder at the URL ``location`` (metadata, then, with ``files``, the
    rank files it lists), removed on exit. CheckpointError when the folder is not committed."""
    store, name = resolve(location, storage_options)
    with staged_in(store, name, files=files) as folder:
        yield folder


@contextlib.contextmanager
def staged_in(store: Storage, name: str, *, files: bool = True) -> Iterator[Path]:
    """``staged`` for the folder ``name`` of ``store``."""
    where = store.describe(name)
    tmp = Path(tempfile.mkdtemp(prefix="ember-sharded-read-"))
    try:
        try:
            _download(store, f"{name}/{METADATA}", tmp / METADATA)
        except (FileNotFoundError, IsADirectoryError):
            raise CheckpointError(
                f"no sharded checkpoint at {where}: it has no {METADATA}, so no save there completed (an "
                "interrupted save is never a checkpoint). Check the URL, or pass a committed checkpoint") from None
        if files:
            meta = _meta.parse((tmp / METADATA).read_bytes(), where)
            for file in meta.files:
                if not RANK_FILE_RE.fullmatch(file):
                    raise CheckpointError(f"corrupt sharded checkpoint {where}: its metadata names {file!r:.80}, "
                                          "which is not a rank file name")
                try:
                    _download(store, f"{name}/{file}", tmp / file)
                except FileNotFoundError:
                    pass  # the local reader reports the missing file as damage, naming it
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def local(location: str | os.PathLike, storage_options: dict | None = None, *, files: bool = True
          ) -> Iterator[str | os.PathLike]:
    """``location`` itself when it is local; a staged local copy when it is a URL."""
    if not is_url(location):
        yield location
        return
    with staged(os.fspath(location), storage_options, files=files) as folder:
        yield folder
