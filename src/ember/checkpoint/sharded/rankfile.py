"""One rank's file: an ember checkpoint file (a valid safetensors file, CRC-32C over every byte)
whose state is ``{"rank": R, "save_id": S, "shards": {key: tensor}}``, written and fsynced by that
rank; and the reader that maps it, checks that it is the file the metadata names (its rank, its
save's id, the SHA-256 digest of its header, which holds every chunk's CRC-32C) and hands out verified
chunks by key."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from ember.checkpoint.format import container
from ember.checkpoint.format import header as _header
from ember.checkpoint.format.checksums import crc32_many
from ember.checkpoint.format.dtypes import CODES, carrier_for
from ember.checkpoint.format.mapping import map_file
from ember.checkpoint.sharded.layout import open_member, rank_of
from ember.errors import CheckpointCorruptError, CheckpointError

if TYPE_CHECKING:
    from ember.checkpoint.sharded.metadata import ShardedMeta

TAG = "$"


def _stored(t: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The tensor as the file stores it (a flat integer carrier for dtypes without a safetensors code)
    and its node in the state tree."""
    t = t.detach()
    if t.dtype in CODES:
        return t, {}
    flat = t.contiguous().reshape(-1).view(carrier_for(t.dtype))
    return flat, {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}


def header_digest(header: Any) -> str:
    """The SHA-256 of a file's header bytes (its first ``data_start`` bytes): its every chunk's CRC-32C,
    place, rank and save id."""
    return hashlib.sha256(header).hexdigest()


def write_rank_file(path: Path, rank: int, chunks: Mapping[str, torch.Tensor], save_id: str) -> tuple[int, str]:
    """Write and fsync the file of ``rank`` (created, never overwritten); returns its size and header digest."""
    tensors, nodes = {}, []
    for key, t in chunks.items():
        stored, extra = _stored(t)
        tensors[key] = stored
        nodes.append([key, {TAG: "tensor", "name": key, **extra}])
    tree = {TAG: "dict", "items": [["rank", rank], ["save_id", save_id], ["shards", {TAG: "dict", "items": nodes}]]}
    with open(path, "xb+") as f:
        container.write(f, tree, tensors, synced=True)
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
        f.seek(0)
        n = int.from_bytes(f.read(8), "little")
        f.seek(0)
        return size, header_digest(f.read(8 + n))


def _binding(tree: Any) -> tuple[Any, Any]:
    """(rank, save id) as the file's state tree records them (None where it does not)."""
    items = tree.get("items") if isinstance(tree, dict) else None
    found = dict(i for i in items if isinstance(i, list) and len(i) == 2 and isinstance(i[0], str)) \
        if isinstance(items, list) else {}
    return found.get("rank"), found.get("save_id")


class RankFile:
    """A rank file opened for reading: header checked (structure, checksum, state tree), bytes mapped;
    ``tensors(...)`` verifies the CRC-32C of each chunk it returns."""

    def __init__(self, folder: Path, name: str, meta: "ShardedMeta") -> None:
        path = Path(folder) / name
        self.label = str(path)
        try:
            f = open_member(Path(folder), name)
        except FileNotFoundError:
            raise CheckpointCorruptError(f"corrupt sharded checkpoint: {path} is missing") from None
        except OSError as e:
            raise CheckpointError(f"cannot open {path}: {e.strerror or e}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size != meta.files[name]:
                raise CheckpointCorruptError(f"corrupt checkpoint {path}: it is {size} bytes, the metadata says "
                                             f"{meta.files[name]} (truncated or replaced)")
            self.hdr = _header.parse(f, size, self.label, verify=True)
            if self.hdr.kind != "ember":
                raise CheckpointCorruptError(f"corrupt checkpoint {path}: not an ember file (no checksums)")
            # lazily: a rank that reshards reads only the chunks it needs, so the pages of others stay on disk
            self.buf = map_file(f.fileno(), self.label, populate=False) if size else b""
        self._check_binding(name, meta)
        self.entries = {e.name: e for e in self.hdr.entries}
        self._verified: set[str] = set()

    def _check_binding(self, name: str, meta: "ShardedMeta") -> None:
        rank, save_id = _binding(self.hdr.tree)
        if save_id != meta.save_id:
            raise CheckpointCorruptError(
                f"corrupt sharded checkpoint: {self.label} belongs to another save (its save id {save_id!r:.40}, the "
                f"metadata's {meta.save_id!r}): rank files of different saves were mixed; use a folder as it was saved")
        if rank != rank_of(name):
            raise CheckpointCorruptError(f"corrupt sharded checkpoint: {self.label} is the file of rank {rank!r:.20}, "
                                         f"its name says rank {rank_of(name)}")
        if header_digest(memoryview(self.buf)[:self.hdr.data_start]) != meta.digests[name]:
            raise CheckpointCorruptError(
                f"corrupt sharded checkpoint: {self.label}'s header (its chunks' places and CRC-32C) does not match "
                "the digest the metadata records for it: it belongs to another save or was edited")

    def entry(self, key: str) -> _header.Entry:
        e = self.entries.get(key)
        if e is None:
            raise CheckpointCorruptError(f"corrupt sharded checkpoint: {self.label} has no chunk {key!r:.200}, "
                                         "which the metadata places there")
        return e

    def verify(self, keys: list[str]) -> None:
        todo = [self.entry(k) for k in dict.fromkeys(keys) if k not in self._verified]
        base, view = self.hdr.data_start, memoryview(self.buf)
        for e, got in zip(todo, crc32_many([view[base + e.begin: base + e.end] for e in todo])):
            if got != e.crc:
                raise CheckpointCorruptError(
                    f"corrupt checkpoint {self.label}: chunk {e.name!r:.200} (file bytes {base + e.begin}.."
                    f"{base + e.end}) fails its CRC-32C check (stored {e.crc:08x}, computed {got:08x}): its data "
                    "was damaged; use another checkpoint")
            self._verified.add(e.name)

    def tensor(self, key: str, dtype: torch.dtype, sizes: tuple[int, ...]) -> torch.Tensor:
        """The chunk ``key`` as a ``dtype`` tensor of ``sizes`` (a view of the mapped file), verified."""
        e = self.entry(key)
        self.verify([key])
        want = int(torch.Size(sizes).numel()) * dtype.itemsize
        if e.end - e.begin != want or (e.dtype != dtype and e.dtype != carrier_for(dtype)):
            raise CheckpointCorruptError(
                f"corrupt sharded checkpoint: chunk {key!r:.200} in {self.label} is {e.code} {list(e.shape)}, "
                f"the metadata says {dtype} {list(sizes)}")
        if e.end == e.begin:
            return torch.empty(sizes, dtype=dtype)
        t = torch.frombuffer(self.buf, dtype=e.dtype, count=(e.end - e.begin) // e.dtype.itemsize,
                             offset=self.hdr.data_start + e.begin)
        if t.data_ptr() % dtype.itemsize:
            t = t.clone()  # a carried dtype (complex128) wider than its carrier's alignment: kernels need it aligned
        return t.view(dtype).view(sizes)

    def close(self) -> None:
        """Drop this reader's reference: the map is unmapped when the last tensor viewing it is gone
        (closing it explicitly would leave such tensors pointing at unmapped memory)."""
        self.buf = b""
