"""The ``.ckpt`` container: a valid safetensors file whose ``__metadata__`` carries ember's
state tree and a CRC-32C of every byte. Specified in docs/FORMAT.md.

Layout: u64 little-endian header length N | N bytes of JSON header (space-padded so that
8 + N is a multiple of 8) | tensor bytes, back to back, ordered by element size (largest
first) then name, so every tensor starts at a multiple of its element size.

This module writes and reads the container; the header is encoded and checked in ``header``,
checksums are computed in ``checksums``, dtype codes live in ``dtypes``. Readers take a binary
file object and its size (``*_stream``), so any storage backend can serve them; the path-based
functions resolve the path to a store first. Nothing in a file is executed and every size is
checked against the real file size before anything is allocated.
"""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import torch

from ember.checkpoint.format import codec
from ember.checkpoint.format import header as _header
from ember.checkpoint.format import mapping as _mapping
from ember.checkpoint.format.checksums import crc as _crc
from ember.checkpoint.format.checksums import crc32_combine
from ember.checkpoint.format.dtypes import CODES, DTYPES, STORABLE_DTYPES  # noqa: F401 (DTYPES re-exported)
from ember.checkpoint.format.header import CRC_OFFSET, FORMAT_VERSION, HEADER_PREFIX, MAX_HEADER  # noqa: F401
from ember.checkpoint.format.header import Entry, Header, corrupt, readinto
from ember.checkpoint.format.writing import CHUNK, _cpu_bytes, write  # noqa: F401 (write: container.write)
from ember.checkpoint.storage.locations import open_checkpoint, resolve
from ember.checkpoint.transfer_bars import ReadProgress
from ember.errors import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "STORABLE_DTYPES",
    "write",
    "read",
    "read_header",
    "verify_file",
    "is_ember_file",
    "read_stream",
    "read_header_stream",
    "verify_stream",
]

_READ_PIECE = 8 * 2**20  # a verified read checksums pieces of this size on a second thread


# ----------------------------------------------------------------------------- reading a stream


def _crc_error(label: str, hdr: Header, e: Entry, got: int) -> CheckpointError:
    a, b = hdr.data_start + e.begin, hdr.data_start + e.end
    return corrupt(
        label,
        f"tensor {e.name!r} (file bytes {a}..{b}) fails its CRC-32C check (stored {e.crc:08x}, computed {got:08x}): "
        "its data was damaged (bit rot, a partial copy); use another checkpoint",
    )


def _tree(hdr: Header, label: str, warn: bool) -> Any:
    if hdr.kind == "ember":
        return hdr.tree
    if warn:
        warnings.warn(
            f"{label} is a plain safetensors file, not an ember checkpoint: its {len(hdr.entries)} tensors are "
            "loaded as {'state_dict': {name: tensor}}; it has no ember checksums, so its bytes were not verified",
            UserWarning,
            stacklevel=4,
        )
    return codec.weights_tree(sorted(e.name for e in hdr.entries))


def _device(map_location: Any) -> torch.device | None:
    if map_location is None:
        return None
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(f"map_location must be None, a str or a torch.device, got {type(map_location).__name__}")
    dev = torch.device(map_location)
    return None if dev.type == "cpu" else dev


def _fileno(f: Any) -> int | None:
    try:
        return f.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def read_stream(f: BinaryIO, size: int, label: str, *, map_location: Any = None, verify: bool = True,
                mmap: bool = False) -> tuple[Any, dict[str, torch.Tensor]]:
    """``read`` for an open binary file ``f`` of ``size`` bytes, positioned at its start.

    ``label`` names the file in messages. ``mmap`` maps the file when ``f`` has a file descriptor
    and reads it otherwise (``mapping``: copy-on-write views, checksums on every core).
    """
    device = _device(map_location)
    hdr = _header.parse(f, size, label, verify=True)
    fd = _fileno(f) if mmap and size else None
    if fd is not None:
        checked = verify and hdr.kind == "ember"
        buf = _mapping.map_file(fd, label, populate=checked)
        if len(buf) != size:
            raise corrupt(label, "the file changed size while it was being read")
        if checked:
            _mapping.check_mapped(buf, hdr, label, lambda e, got: _crc_error(label, hdr, e, got))
        tensors = _mapping.mapped_tensors(buf, hdr)
        if device is not None:
            tensors = _mapping.to_device(tensors, device)
    else:
        tensors = _read_tensors(f, hdr, label, verify and hdr.kind == "ember")
        if device is not None:
            tensors = {k: t.to(device) for k, t in tensors.items()}
    return _tree(hdr, label, warn=True), tensors


def _read_tensors(f: BinaryIO, hdr: Header, label: str, checked: bool) -> dict[str, torch.Tensor]:
    """Read every tensor, in data order, into its own allocation. When ``checked``, a second thread
    checksums each piece as soon as it has been read; once reading is done this thread checksums the
    pieces not yet started (from the back), and the pieces' CRCs are combined per tensor."""
    tensors: dict[str, torch.Tensor] = {}
    pieces: list[tuple[str, memoryview]] = []
    futures = []
    reader = ReadProgress(f, hdr.file_size - hdr.data_start, f"loading {os.path.basename(label)}")
    try:
        with ThreadPoolExecutor(1) as pool:
            for e in hdr.entries:  # in data order, covering the data section without holes
                t = torch.empty(e.shape, dtype=e.dtype)
                view = _cpu_bytes(t)
                for s in range(0, len(view), _READ_PIECE):
                    piece = view[s : s + _READ_PIECE]
                    readinto(reader, piece, label, f"tensor {e.name!r}")
                    if checked:
                        pieces.append((e.name, piece))
                        futures.append(pool.submit(_crc, piece))
                tensors[e.name] = t
            piece_crcs = [0] * len(pieces)
            for i in reversed(range(len(pieces))):
                piece_crcs[i] = _crc(pieces[i][1]) if futures[i].cancel() else futures[i].result()
    finally:
        reader.close()
    if checked:
        crcs = {e.name: 0 for e in hdr.entries}
        for (name, piece), value in zip(pieces, piece_crcs):
            crcs[name] = crc32_combine(crcs[name], value, len(piece))
        for e in hdr.entries:
            if crcs[e.name] != e.crc:
                raise _crc_error(label, hdr, e, crcs[e.name])
    return tensors


def read_header_stream(f: BinaryIO, size: int, label: str, *, verify: bool = True) -> dict:
    """``read_header`` for an open binary file ``f`` of ``size`` bytes, positioned at its start."""
    hdr = _header.parse(f, size, label, verify)
    return {
        "path": label,
        "kind": hdr.kind,
        "format_version": hdr.format_version,
        "ember_version": hdr.ember_version,
        "tree": _tree(hdr, label, warn=False),
        "tensors": {
            e.name: {"dtype": e.dtype, "dtype_code": e.code, "shape": e.shape, "nbytes": e.end - e.begin}
            for e in hdr.entries
        },
        "checksummed": hdr.kind == "ember",
        "file_size": hdr.file_size,
        "header_size": hdr.data_start - 8,
        "metadata": {k: v for k, v in hdr.metadata.items() if k not in (_header.K_STATE, _header.K_CRC)},
    }


def verify_stream(f: BinaryIO, size: int, label: str) -> None:
    """``verify_file`` for an open binary file ``f`` of ``size`` bytes, positioned at its start."""
    hdr = _header.parse(f, size, label, verify=True)
    if hdr.kind != "ember":
        raise CheckpointError(
            f"{label} is a plain safetensors file: its structure is valid but it has no ember checksums, "
            "so its bytes cannot be verified"
        )
    buf = memoryview(bytearray(min(CHUNK, max((e.end - e.begin for e in hdr.entries), default=0)) or 1))
    for e in hdr.entries:  # data order, back to back from data_start (checked by parse)
        value, left = 0, e.end - e.begin
        while left:
            piece = buf[: min(left, len(buf))]
            readinto(f, piece, label, f"tensor {e.name!r}")
            value = _crc(piece, value)
            left -= len(piece)
        if value != e.crc:
            raise _crc_error(label, hdr, e, value)


# ----------------------------------------------------------------------------- reading a path


def read(path: Any, *, map_location: Any = None, verify: bool = True,
         mmap: bool | None = None) -> tuple[Any, dict[str, torch.Tensor]]:
    """Read a checkpoint: ``(tree, {name: tensor})``; pass them to ``codec.unflatten``.

    The header (structure, checksum, state tree) is always checked. A local file is mapped
    copy-on-write (``mmap=None``, the default, or ``True``): ``verify=True`` checks the CRC-32C of
    every tensor over the mapped bytes on every core before any tensor is returned, and the tensors
    are views of the mapping (no copy; writes to them stay in this process); ``verify=False`` maps
    lazily (bytes paged in on use). ``mmap=False``, and stores that are not a local disk, read each
    tensor into its own allocation (sizes come from a header already checked against the real file
    size) while a second thread checksums each piece. A non-CPU ``map_location`` copies the verified
    tensors there. A plain safetensors file loads as ``{"state_dict": ...}`` with a warning.
    """
    store, name = resolve(path)
    with open_checkpoint(store, name, str(path)) as (f, size):
        local = mmap is not False and store.local_path(name) is not None
        return read_stream(f, size, str(path), map_location=map_location, verify=verify, mmap=local)


def read_header(path: Any, *, verify: bool = True) -> dict:
    """Parse and check the header only (cheap). ``verify`` checks the header checksum.

    Returns ``kind`` ("ember" or "safetensors"), ``format_version``, ``ember_version``,
    ``tree`` (the codec tree, tensors unresolved), ``tensors`` (name -> dtype, dtype_code,
    shape, nbytes, in data order), ``checksummed``, ``file_size``, ``header_size``, ``metadata``.
    """
    store, name = resolve(path)
    with open_checkpoint(store, name, str(path)) as (f, size):
        return read_header_stream(f, size, str(path), verify=verify)


def verify_file(path: Any) -> None:
    """Check every byte of the file against its checksums, and its state tree exactly as loading
    does, streaming. Raises CheckpointError on failure (CheckpointCorruptError naming the file for damage).

    A plain safetensors file has no checksums: its structure is checked, then CheckpointError is raised.
    """
    store, name = resolve(path)
    with open_checkpoint(store, name, str(path)) as (f, size):
        verify_stream(f, size, str(path))


def is_ember_file(path: Any) -> bool:
    """Cheap sniff: does the file start like an ember checkpoint? Never raises."""
    try:
        store, name = resolve(path)
        with open_checkpoint(store, name, str(path)) as (f, size):
            head = f.read(CRC_OFFSET)
    except (CheckpointError, OSError):
        return False
    if len(head) < CRC_OFFSET:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:] == HEADER_PREFIX and n <= size - 8
