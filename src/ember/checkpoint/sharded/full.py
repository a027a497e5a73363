"""Whole-checkpoint operations on a sharded folder, in one plain process (no torch.distributed):
``read_full`` (every tensor assembled from its chunks), ``verify_sharded``, ``is_sharded_checkpoint``,
``consolidate`` (into one single-file ember checkpoint)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from ember.checkpoint.format import codec, container
from ember.checkpoint.format.mapping import SMALL
from ember.checkpoint.sharded import metadata as _meta
from ember.checkpoint.sharded.layout import local_folder
from ember.checkpoint.sharded.rankfile import RankFile
from ember.checkpoint.sharded.split import join
from ember.checkpoint.storage.locations import open_checkpoint, resolve
from ember.checkpoint.writer import write_file
from ember.errors import CheckpointCorruptError, CheckpointError


def is_sharded_checkpoint(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a committed sharded checkpoint folder (its metadata present and intact).
    Never raises; reads the metadata only."""
    try:
        _meta.read(local_folder(location))
    except (CheckpointError, OSError):
        return False
    return True


def _by_file(meta: _meta.ShardedMeta) -> dict[str, list[tuple[str, _meta.Chunk]]]:
    out: dict[str, list[tuple[str, _meta.Chunk]]] = {f: [] for f in meta.files}
    for fqn, t in meta.tensors.items():
        for c in t.chunks:
            out[c.file].append((fqn, c))
    return out


def read_full(location: str | os.PathLike, *, map_location: Any = "cpu") -> dict:
    """The checkpoint dict of the sharded folder ``location``, in this process alone: every tensor
    whole (assembled from its chunks, each chunk's CRC-32C verified), and every other value as saved —
    the layout a single-file ember checkpoint of the same state gives."""
    folder = local_folder(location)
    meta = _meta.read(folder)  # its tensors' bytes are checked to fit in its rank files before any allocation
    whole = {fqn for fqn, t in meta.tensors.items() if len(t.chunks) == 1 and list(t.chunks[0].sizes) == list(t.size)}
    full = {fqn: torch.empty(t.size, dtype=t.dtype) for fqn, t in meta.tensors.items() if fqn not in whole}
    filled = dict.fromkeys(meta.tensors, 0)
    for file, chunks in _by_file(meta).items():
        if not chunks:
            continue
        rf = RankFile(folder, file, meta)
        try:
            rf.verify([c.key for _, c in chunks])
            for fqn, c in chunks:
                piece = rf.tensor(c.key, meta.tensors[fqn].dtype, c.sizes)
                if fqn in whole:  # stored in one chunk: a view of the (copy-on-write) mapped rank file
                    full[fqn] = piece if piece.nbytes >= SMALL else piece.clone()
                    filled[fqn] += piece.numel()
                    continue
                dst = full[fqn]
                for dim, (o, n) in enumerate(zip(c.offsets, c.sizes)):
                    dst = dst.narrow(dim, o, n)
                dst.copy_(piece)
                filled[fqn] += piece.numel()
                piece = None
        finally:
            rf.close()
    unfilled = [fqn for fqn, t in meta.tensors.items() if filled[fqn] != math.prod(t.size)]
    if unfilled:  # the metadata's coverage check makes this impossible; memory no chunk filled is never handed out
        raise CheckpointCorruptError(f"corrupt sharded checkpoint {folder}: tensor {unfilled[0]!r:.200} is not "
                                     "filled exactly once by its chunks")
    if map_location is not None and torch.device(map_location).type != "cpu":
        full = {k: v.to(map_location) for k, v in full.items()}
    try:
        return join(meta.tree, full)
    except CheckpointCorruptError as e:
        raise CheckpointCorruptError(f"corrupt sharded checkpoint {folder}: {e}") from None


def verify_sharded(location: str | os.PathLike) -> None:
    """Check the folder: its metadata (checksum, every field), every rank file's every byte against its
    CRC-32C and size, and that every chunk the metadata names is in its file with the right dtype and
    size. Raises CheckpointCorruptError naming the file on any damage, CheckpointError if it is not a
    committed sharded checkpoint."""
    folder = local_folder(location)
    meta = _meta.read(folder)
    for file, chunks in _by_file(meta).items():
        path = folder / file
        rf = RankFile(folder, file, meta)  # size, header, binding to this save
        try:
            for fqn, c in chunks:
                rf.tensor(c.key, meta.tensors[fqn].dtype, c.sizes)  # present, right dtype and size
        finally:
            rf.close()
        container.verify_file(path)  # every byte, streaming


def consolidate(src: str | os.PathLike, dst: str | os.PathLike, *, storage_options: dict | None = None) -> str:
    """Write the sharded checkpoint ``src`` as one single-file ember checkpoint ``dst`` (a path or URL),
    then verify it; returns where it was written."""
    state = read_full(src)
    tree, tensors = codec.flatten(state)
    store, name = resolve(dst, storage_options)
    where = write_file((store, name), tree, tensors, progress=True)
    with open_checkpoint(store, name) as (f, size):
        container.verify_stream(f, size, where)
    return where


def folder_summary(location: str | os.PathLike, *, rank_files: bool = True) -> dict:
    """What the metadata says (no tensor read): for ``ember ckpt inspect | ls``. ``rank_files=False``: the
    rank files' headers are not checked against the metadata (a listing of a folder in an object store)."""
    folder = Path(local_folder(location))
    meta = _meta.read(folder, files=rank_files)
    for file in meta.files if rank_files else ():  # each rank file's header: bound to this save (no data read)
        RankFile(folder, file, meta).close()
    return {
        "world_size": meta.world_size,
        "files": dict(meta.files),
        "ember_version": meta.ember_version,
        "tree": meta.tree,
        "tensors": {fqn: {"dtype": t.dtype, "shape": t.size,
                          "nbytes": int(torch.Size(t.size).numel()) * t.dtype.itemsize,
                          "chunks": len(t.chunks)} for fqn, t in meta.tensors.items()},
        "metadata_mtime": os.stat(folder / _meta.METADATA).st_mtime,
    }
