"""``metadata.json`` of a sharded checkpoint folder: DCP's ``Metadata`` as JSON, with a checksum.

The file is one JSON object (ASCII, compact) that starts with
``{"ember.sharded":"1","crc32c":"XXXXXXXX",`` where XXXXXXXX is the CRC-32C of the whole file with
those 8 digits read as ``00000000``. Its fields: ``ember_version``, ``world_size``, ``save_id`` (32 hex
digits, made once per save and written into every rank file's header too), ``files`` (``[[name,
size, digest], ...]``: every rank file, its exact size and the SHA-256 of its header, which holds
every chunk's CRC-32C), ``tensors`` (``[[fqn, {"dtype", "size", "chunks": [[offsets, sizes, file
index, key], ...]}], ...]``: each tensor's dtype and global size, and each stored chunk's place in the
tensor and in a rank file, under the key ``fqn@offsets``) and ``state`` (the checkpoint's state tree,
encoded as in a single-file checkpoint; its tensor nodes name the ``tensors`` entries). It is
untrusted input: its size and bracket nesting are bounded before it is parsed, and every field is
checked before anything is read or allocated: the chunks cover each tensor exactly once, the tensors'
bytes fit in the rank files, every rank file belongs to a rank below the world size.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ember.checkpoint.format import decode
from ember.checkpoint.format.checksums import crc
from ember.checkpoint.format.header import loads, parsing, structure_problem
from ember.checkpoint.sharded import entries as _entries
from ember.checkpoint.sharded.entries import Chunk, TensorMeta
from ember.checkpoint.sharded.layout import METADATA, RANK_FILE_RE, open_member, rank_of, refuse_torch_folder
from ember.errors import CheckpointCorruptError, CheckpointError, CheckpointVersionError
from ember.version import __version__

FORMAT = 1
PREFIX = b'{"ember.sharded":"1","crc32c":"'
_FIELDS = {"ember.sharded", "crc32c", "ember_version", "world_size", "save_id", "files", "tensors", "state"}
# bytes: ~150k one-chunk tensor entries of ~200 bytes (the bracket limit, header.MAX_CONTAINERS, allows
# ~150k entries at most in any size) or 32 MiB of numbers in the state tree. The worst metadata this
# allows is checked in 1-2 s on an idle core (bench/sharded_metadata.py --worst); a save whose metadata is
# larger is refused when it is written
MAX_METADATA = 32 * 2**20
_HEX = re.compile(r"[0-9a-f]{64}")
_SAVE_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class ShardedMeta:
    world_size: int
    files: dict[str, int]  # rank file name -> exact size in bytes
    tensors: dict[str, TensorMeta]  # fqn -> layout
    tree: Any  # the checkpoint's state tree (codec encoding)
    ember_version: str = __version__
    save_id: str = ""  # this save's id, in every rank file's header too
    digests: dict[str, str] = field(default_factory=dict)  # rank file name -> SHA-256 of its header

    def specs(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return {fqn: (t.dtype, t.size) for fqn, t in self.tensors.items()}

    def to_dcp(self) -> Any:
        """DCP's ``Metadata``, whose ``storage_data`` maps each chunk's ``MetadataIndex`` to (file, key)."""
        # deferred: loads torch.distributed.checkpoint only when DCP metadata is asked for
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
    body = {"ember_version": meta.ember_version, "world_size": meta.world_size, "save_id": meta.save_id,
            "files": [[f, meta.files[f], meta.digests[f]] for f in files], "tensors": tensors, "state": meta.tree}
    rest = json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    raw = bytearray(PREFIX + b'00000000",' + rest[1:].encode("ascii"))
    problem = structure_problem(raw) or (f"it is {len(raw)} bytes, more than the {MAX_METADATA} a reader accepts"
                                         if len(raw) > MAX_METADATA else "")
    if problem:
        raise CheckpointError(f"the sharded checkpoint's metadata could not be read back: {problem}; "
                              "the state holds too many tensors or too much non-tensor data")
    raw[len(PREFIX):len(PREFIX) + 8] = b"%08x" % crc(raw)
    return bytes(raw)


def from_dcp(md: Any, results: list, world_size: int, tree: Any, save_id: str) -> ShardedMeta:
    """Translate the planner's global metadata (DCP's ``Metadata``) and every rank's write results
    (storage_data: (file, key, file size, header digest)) into the JSON model; anything but tensors is refused."""
    # deferred: loads torch.distributed.checkpoint only when DCP metadata is asked for
    from torch.distributed.checkpoint.metadata import MetadataIndex, TensorStorageMetadata

    where, files, digests = {}, {}, {}
    for rank_results in results:
        for r in rank_results:
            file, key, size, digest = r.storage_data
            where[r.index] = (file, key)
            files[file], digests[file] = size, digest
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
    return ShardedMeta(world_size, files, tensors, tree, save_id=save_id, digests=digests)


# ----------------------------------------------------------------------------- reading


def _bad(label: str, msg: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"corrupt sharded checkpoint {label}: {msg}")


def read(folder: Path, *, files: bool = True) -> ShardedMeta:
    """The checked metadata of the folder; CheckpointError when it is not a complete sharded checkpoint.
    ``files=False``: the rank files are not looked at (a folder in an object store whose metadata alone was
    fetched, for listing); every reader of tensors checks them."""
    folder = Path(folder)
    refuse_torch_folder(folder)
    try:
        with open_member(folder, METADATA) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_METADATA:
                raise _bad(str(folder), f"{METADATA} is {size} bytes, more than the {MAX_METADATA} allowed")
            raw = f.read(MAX_METADATA + 1)
    except FileNotFoundError:
        why = "it is not a folder" if folder.exists() and not folder.is_dir() else \
            "the folder does not exist" if not folder.exists() else \
            f"it has no {METADATA}, so its save never completed (an interrupted save is never a checkpoint)"
        raise CheckpointError(f"no sharded checkpoint at {folder}: {why}") from None
    if len(raw) > MAX_METADATA:
        raise _bad(str(folder), f"{METADATA} grew past the {MAX_METADATA} bytes allowed while it was read")
    meta = parse(raw, str(folder))
    if files:
        check_files(folder, meta)
    return meta


def check_files(folder: Path, meta: ShardedMeta) -> None:
    """Every rank file the metadata names is a regular file of the folder (a link leaving the folder
    is refused), of exactly the recorded size: checked before any tensor is allocated."""
    for name, want in meta.files.items():
        path = folder / name
        try:
            with open_member(folder, name) as f:
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise _bad(str(folder), f"{name} is missing") from None
        except OSError as e:
            raise CheckpointError(f"cannot open {path}: {e.strerror or e}") from None
        if size != want:
            raise CheckpointCorruptError(f"corrupt checkpoint {path}: it is {size} bytes, the metadata says {want} "
                                         "(truncated or replaced)")


def parse(raw: bytes, label: str) -> ShardedMeta:
    n = len(PREFIX)
    if not raw.startswith(PREFIX) or len(raw) < n + 10:
        if raw.startswith(b'{"ember.sharded":"') and not raw.startswith(PREFIX):
            raise CheckpointVersionError(f"{label} is a sharded checkpoint of a newer format than this ember "
                                         f"({__version__}) reads (format {FORMAT}); upgrade ember to load it")
        raise _bad(label, f"{METADATA} does not start with {PREFIX.decode()} (truncated or not ember's)")
    stored = raw[n:n + 8]
    got = crc(memoryview(raw)[n + 8:], crc(b"00000000", crc(raw[:n])))  # the digits read as 0s, no copy
    if stored != b"%08x" % got:
        raise _bad(label, f"{METADATA} fails its CRC-32C check (stored {stored[:8]!r}, computed {got:08x}): "
                          "it was damaged or cut short; use another checkpoint")
    problem = structure_problem(raw)
    if problem:
        raise _bad(label, f"{METADATA}: {problem}")
    with parsing():
        return _parsed(raw, label)


def _parsed(raw: bytes, label: str) -> ShardedMeta:
    try:
        obj = loads(raw.decode("ascii"))
    except (ValueError, RecursionError) as e:
        raise _bad(label, f"{METADATA} is not valid JSON ({e})") from None
    if type(obj) is not dict or set(obj) != _FIELDS:
        raise _bad(label, f"{METADATA} must hold exactly the fields {sorted(_FIELDS)} (a folder written by an "
                          "earlier development version of ember has no save_id: consolidate it with that version)")
    try:
        meta = _model(obj)
        decode.validate(meta.tree, meta.specs())
    except CheckpointCorruptError as e:
        raise _bad(label, str(e)) from None
    return meta


def _model(obj: dict) -> ShardedMeta:
    world = obj["world_size"]
    if type(world) is not int or not 1 <= world < 2**31 or type(obj["ember_version"]) is not str:
        raise CheckpointCorruptError(f"world_size must be an int >= 1, got {world!r:.40}")
    if type(obj["save_id"]) is not str or not _SAVE_ID.fullmatch(obj["save_id"]):
        raise CheckpointCorruptError(f"save_id must be 32 hex digits, got {obj['save_id']!r:.40}")
    files, digests = _files(obj["files"], world)
    tensors = _entries.tensors(obj["tensors"], list(files))
    stored, held = _entries.stored_bytes(tensors), sum(files.values())
    if stored > held:  # every element is stored once: the tensors cannot be larger than the files
        raise CheckpointCorruptError(f"its tensors hold {stored} bytes, but its rank files hold only {held} bytes")
    return ShardedMeta(world, files, tensors, obj["state"], obj["ember_version"], obj["save_id"], digests)


def _files(entries: Any, world: int) -> tuple[dict[str, int], dict[str, str]]:
    if type(entries) is not list:
        raise CheckpointCorruptError("'files' must be a list of [name, size, digest]")
    files, digests = {}, {}
    for entry in entries:
        if type(entry) is not list or len(entry) != 3 or type(entry[0]) is not str or \
                not RANK_FILE_RE.fullmatch(entry[0]) or type(entry[1]) is not int or entry[1] < 0 or \
                entry[0] in files or type(entry[2]) is not str or not _HEX.fullmatch(entry[2]):
            raise CheckpointCorruptError(f"file entry {entry!r:.80} is not a unique [rank-NNNNN.safetensors, size, "
                                         "sha256]")
        if rank_of(entry[0]) >= world:
            raise CheckpointCorruptError(f"{entry[0]} is the file of rank {rank_of(entry[0])}, "
                                         f"but world_size is {world}")
        files[entry[0]], digests[entry[0]] = entry[1], entry[2]
    return files, digests
