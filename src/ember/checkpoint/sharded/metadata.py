"""``metadata.json`` of a sharded checkpoint folder: DCP's ``Metadata`` as JSON, with a checksum.

The file is one JSON object (ASCII, compact) that starts with
``{"ember.sharded":"1","crc32c":"XXXXXXXX",`` where XXXXXXXX is the CRC-32C of the whole file with
those 8 digits read as ``00000000``. Its fields: ``ember_version``, ``world_size``, ``files``
(``[[name, size], ...]``: every rank file and its exact size), ``tensors`` (``[[fqn, {"dtype", "size",
"chunks": [[offsets, sizes, file index, key], ...]}], ...]``: each tensor's dtype and global size,
and each stored chunk's place in the tensor and in a rank file) and ``state`` (the checkpoint's state
tree, encoded as in a single-file checkpoint; its tensor nodes name the ``tensors`` entries). It is
untrusted input: its size and bracket nesting are bounded before it is parsed, and every field is
checked before anything is read or allocated.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ember.checkpoint.format import decode
from ember.checkpoint.format.checksums import crc
from ember.checkpoint.format.dtypes import TORCH_DTYPES
from ember.checkpoint.format.header import MAX_HEADER, loads, structure_problem
from ember.checkpoint.sharded.layout import METADATA, RANK_FILE_RE, refuse_torch_folder
from ember.errors import CheckpointCorruptError, CheckpointError, CheckpointVersionError
from ember.version import __version__

FORMAT = 1
PREFIX = b'{"ember.sharded":"1","crc32c":"'
_FIELDS = {"ember.sharded", "crc32c", "ember_version", "world_size", "files", "tensors", "state"}
_OVERLAP_CHECK_MAX = 256  # chunks of one tensor checked pairwise for overlaps (more: volume and bounds only)


@dataclass(frozen=True)
class Chunk:
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str
    key: str


@dataclass(frozen=True)
class TensorMeta:
    dtype: torch.dtype
    size: tuple[int, ...]
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class ShardedMeta:
    world_size: int
    files: dict[str, int]  # rank file name -> exact size in bytes
    tensors: dict[str, TensorMeta]  # fqn -> layout
    tree: Any  # the checkpoint's state tree (codec encoding)
    ember_version: str = __version__

    def specs(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return {fqn: (t.dtype, t.size) for fqn, t in self.tensors.items()}

    def to_dcp(self) -> Any:
        """DCP's ``Metadata``, whose ``storage_data`` maps each chunk's ``MetadataIndex`` to (file, key)."""
        from torch.distributed.checkpoint.metadata import (ChunkStorageMetadata, Metadata, MetadataIndex,
                                                           TensorProperties, TensorStorageMetadata)

        sd, index = {}, {}
        for fqn, t in self.tensors.items():
            chunks = [ChunkStorageMetadata(torch.Size(c.offsets), torch.Size(c.sizes)) for c in t.chunks]
            sd[fqn] = TensorStorageMetadata(TensorProperties(dtype=t.dtype), torch.Size(t.size), chunks)
            for c in t.chunks:
                index[MetadataIndex(fqn, c.offsets)] = (c.file, c.key)
        return Metadata(state_dict_metadata=sd, storage_data=index)


# ----------------------------------------------------------------------------- writing


def encode(meta: ShardedMeta) -> bytes:
    files = sorted(meta.files)
    where = {f: i for i, f in enumerate(files)}
    tensors = [[fqn, {"dtype": str(t.dtype).removeprefix("torch."), "size": list(t.size),
                      "chunks": [[list(c.offsets), list(c.sizes), where[c.file], c.key] for c in t.chunks]}]
               for fqn, t in meta.tensors.items()]
    body = {"ember_version": meta.ember_version, "world_size": meta.world_size,
            "files": [[f, meta.files[f]] for f in files], "tensors": tensors, "state": meta.tree}
    rest = json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    raw = bytearray(PREFIX + b'00000000",' + rest[1:].encode("ascii"))
    problem = structure_problem(raw)
    if problem:
        raise CheckpointError(f"the sharded checkpoint's metadata could not be read back: {problem}; "
                              "the state holds too many tensors or too much non-tensor data")
    raw[len(PREFIX):len(PREFIX) + 8] = b"%08x" % crc(raw)
    return bytes(raw)


def from_dcp(md: Any, results: list, world_size: int, tree: Any) -> ShardedMeta:
    """Translate the planner's global metadata (DCP's ``Metadata``) and every rank's write results
    (storage_data: (file, key, file size)) into the JSON model; anything but tensors is refused."""
    from torch.distributed.checkpoint.metadata import MetadataIndex, TensorStorageMetadata

    where, files = {}, {}
    for rank_results in results:
        for r in rank_results:
            file, key, size = r.storage_data
            where[r.index] = (file, key)
            files[file] = size
    tensors = {}
    for fqn, item in md.state_dict_metadata.items():
        if not isinstance(item, TensorStorageMetadata):
            raise CheckpointError(f"{fqn!r} is not a tensor ({type(item).__name__}): sharded checkpoints store "
                                  "tensors through DCP and everything else in their JSON state tree")
        chunks = []
        for c in item.chunks:
            file, key = where[MetadataIndex(fqn, c.offsets)]
            chunks.append(Chunk(tuple(c.offsets), tuple(c.sizes), file, key))
        tensors[fqn] = TensorMeta(item.properties.dtype, tuple(item.size), tuple(chunks))
    return ShardedMeta(world_size, files, tensors, tree)


# ----------------------------------------------------------------------------- reading


def _bad(label: str, msg: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"corrupt sharded checkpoint {label}: {msg}")


def read(folder: Path) -> ShardedMeta:
    """The checked metadata of the folder; CheckpointError when it is not a complete sharded checkpoint."""
    folder = Path(folder)
    refuse_torch_folder(folder)
    path = folder / METADATA
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_HEADER:
                raise _bad(str(folder), f"{METADATA} is {size} bytes, more than the {MAX_HEADER} allowed")
            raw = f.read()
    except FileNotFoundError:
        why = "it is not a folder" if folder.exists() and not folder.is_dir() else \
            "the folder does not exist" if not folder.exists() else \
            f"it has no {METADATA}, so its save never completed (an interrupted save is never a checkpoint)"
        raise CheckpointError(f"no sharded checkpoint at {folder}: {why}") from None
    except IsADirectoryError:
        raise _bad(str(folder), f"{METADATA} is a folder") from None
    return parse(raw, str(folder))


def parse(raw: bytes, label: str) -> ShardedMeta:
    n = len(PREFIX)
    if not raw.startswith(PREFIX) or len(raw) < n + 10:
        if raw.startswith(b'{"ember.sharded":"') and not raw.startswith(PREFIX):
            raise CheckpointVersionError(f"{label} is a sharded checkpoint of a newer format than this ember "
                                         f"({__version__}) reads (format {FORMAT}); upgrade ember to load it")
        raise _bad(label, f"{METADATA} does not start with {PREFIX.decode()} (truncated or not ember's)")
    stored = raw[n:n + 8]
    got = crc(raw[:n] + b"00000000" + raw[n + 8:])
    if stored != b"%08x" % got:
        raise _bad(label, f"{METADATA} fails its CRC-32C check (stored {stored[:8]!r}, computed {got:08x}): "
                          "it was damaged or cut short; use another checkpoint")
    problem = structure_problem(raw)
    if problem:
        raise _bad(label, f"{METADATA}: {problem}")
    try:
        obj = loads(raw.decode("ascii"))
    except (ValueError, RecursionError) as e:
        raise _bad(label, f"{METADATA} is not valid JSON ({e})") from None
    if type(obj) is not dict or set(obj) != _FIELDS:
        raise _bad(label, f"{METADATA} must hold exactly the fields {sorted(_FIELDS)}")
    try:
        meta = _model(obj)
        decode.validate(meta.tree, meta.specs())
    except CheckpointCorruptError as e:
        raise _bad(label, str(e)) from None
    return meta


def _ints(v: Any, what: str, n: int | None = None) -> tuple[int, ...]:
    if type(v) is not list or len(v) > 64 or (n is not None and len(v) != n) or \
            any(type(x) is not int or not 0 <= x < 2**62 for x in v):
        raise CheckpointCorruptError(f"{what} must be a list of {n if n is not None else 'at most 64'} ints >= 0, "
                                     f"got {v!r:.80}")
    return tuple(v)


def _model(obj: dict) -> ShardedMeta:
    world = obj["world_size"]
    if type(world) is not int or not 1 <= world < 2**31 or type(obj["ember_version"]) is not str:
        raise CheckpointCorruptError(f"world_size must be an int >= 1, got {world!r:.40}")
    files_list = obj["files"]
    if type(files_list) is not list:
        raise CheckpointCorruptError("'files' must be a list of [name, size]")
    files = {}
    for entry in files_list:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str or \
                not RANK_FILE_RE.fullmatch(entry[0]) or type(entry[1]) is not int or entry[1] < 0 or entry[0] in files:
            raise CheckpointCorruptError(f"file entry {entry!r:.80} is not a unique [rank-NNNNN.safetensors, size]")
        files[entry[0]] = entry[1]
    names = list(files)
    if type(obj["tensors"]) is not list:
        raise CheckpointCorruptError("'tensors' must be a list of [fqn, layout]")
    tensors = {}
    for entry in obj["tensors"]:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str or entry[0] in tensors:
            raise CheckpointCorruptError(f"tensor entry {entry!r:.80} is not a unique [fqn, layout]")
        tensors[entry[0]] = _tensor(entry[0], entry[1], names)
    return ShardedMeta(world, files, tensors, obj["state"], obj["ember_version"])


def _tensor(fqn: str, v: Any, files: list[str]) -> TensorMeta:
    if type(v) is not dict or set(v) != {"dtype", "size", "chunks"} or type(v["chunks"]) is not list:
        raise CheckpointCorruptError(f"tensor {fqn!r:.200}: expected an object with dtype, size and chunks")
    dtype = TORCH_DTYPES.get(v["dtype"]) if type(v["dtype"]) is str else None
    if dtype is None or not _creatable(dtype):
        raise CheckpointCorruptError(f"tensor {fqn!r:.200}: unknown dtype {v['dtype']!r:.40}")
    size = _ints(v["size"], f"tensor {fqn!r:.200}: size")
    chunks = []
    for c in v["chunks"]:
        if type(c) is not list or len(c) != 4 or type(c[2]) is not int or not 0 <= c[2] < len(files) or \
                type(c[3]) is not str:
            raise CheckpointCorruptError(f"tensor {fqn!r:.200}: chunk {c!r:.80} is not [offsets, sizes, file, key]")
        offsets = _ints(c[0], f"tensor {fqn!r:.200}: chunk offsets", len(size))
        sizes = _ints(c[1], f"tensor {fqn!r:.200}: chunk sizes", len(size))
        if any(o + s > d for o, s, d in zip(offsets, sizes, size)):
            raise CheckpointCorruptError(f"tensor {fqn!r:.200}: chunk at {list(offsets)} of size {list(sizes)} "
                                         f"lies outside the tensor's size {list(size)}")
        chunks.append(Chunk(offsets, sizes, files[c[2]], c[3]))
    _check_cover(fqn, size, chunks)
    return TensorMeta(dtype, size, tuple(chunks))


def _creatable(dtype: torch.dtype) -> bool:
    """A dtype a plain dense tensor can have (not a quantized one: those are never stored)."""
    return dtype not in decode._QUANTIZED


def _check_cover(fqn: str, size: tuple[int, ...], chunks: list[Chunk]) -> None:
    """The chunks must tile the tensor: their volumes add up to its size, and (up to a few hundred
    chunks) no two overlap, so every element is stored exactly once."""
    if sum(math.prod(c.sizes) for c in chunks) != math.prod(size):
        raise CheckpointCorruptError(f"tensor {fqn!r:.200}: its chunks hold {sum(math.prod(c.sizes) for c in chunks)} "
                                     f"elements, but its size {list(size)} has {math.prod(size)}")
    if len(chunks) > _OVERLAP_CHECK_MAX:
        return
    full = [c for c in chunks if math.prod(c.sizes)]
    for i, a in enumerate(full):
        for b in full[i + 1:]:
            if all(ao < bo + bs and bo < ao + as_ for ao, as_, bo, bs in zip(a.offsets, a.sizes, b.offsets, b.sizes)):
                raise CheckpointCorruptError(f"tensor {fqn!r:.200}: chunks at {list(a.offsets)} and {list(b.offsets)} overlap")
