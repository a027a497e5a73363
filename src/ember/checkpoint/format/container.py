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

import ctypes
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Mapping

import torch

from ember.checkpoint.format import codec
from ember.checkpoint.format import header as _header
from ember.checkpoint.format import mapping as _mapping
from ember.checkpoint.format.checksums import crc as _crc
from ember.checkpoint.format.checksums import crc32_combine, crc32_many
from ember.checkpoint.format.dtypes import CODES, DTYPES, STORABLE_DTYPES  # noqa: F401 (DTYPES re-exported)
from ember.checkpoint.format.header import (  # noqa: F401
    CRC_OFFSET,
    FORMAT_VERSION,
    HEADER_PREFIX,
    MAX_HEADER,
    Entry,
    Header,
    corrupt,
    readinto,
)
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

CHUNK = 64 * 2**20  # largest piece copied off an accelerator / handed to write() at once
_READ_PIECE = 8 * 2**20  # a verified read checksums pieces of this size on a second thread


# ----------------------------------------------------------------------------- writing


def _cpu_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a CPU tensor, without a copy when it is contiguous (no numpy needed).

    The view keeps the tensor alive.
    """
    t = t.contiguous()
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    raw = (ctypes.c_ubyte * n).from_address(t.data_ptr())
    raw._tensor = t  # type: ignore[attr-defined]  # keep the memory alive as long as the view
    return memoryview(raw).cast("B")


def _chunks(t: torch.Tensor):
    """Yield the tensor's bytes as memoryviews of at most CHUNK bytes (copied to CPU chunk by chunk)."""
    if t.numel() == 0:
        return
    if t.device.type == "cpu":
        mv = _cpu_bytes(t)
        for s in range(0, len(mv), CHUNK):
            yield mv[s : s + CHUNK]
        return
    flat = t.contiguous().reshape(-1).view(torch.uint8)
    n = flat.numel()
    try:
        host = torch.empty(min(n, CHUNK), dtype=torch.uint8, pin_memory=t.device.type == "cuda")
    except RuntimeError:
        host = torch.empty(min(n, CHUNK), dtype=torch.uint8)
    hv = _cpu_bytes(host)
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        host[:m].copy_(flat[s : s + m])
        yield hv[:m]


def _plan(tensors: Mapping[str, torch.Tensor]) -> list[tuple[Entry, torch.Tensor]]:
    plan = []
    for name, t in tensors.items():
        if type(name) is not str or name == "__metadata__":
            raise CheckpointError(f"tensor name {name!r} cannot be stored: names are strings other than '__metadata__'")
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.is_meta or t.is_quantized:
            raise CheckpointError(f"{name}: {type(t).__name__} is not a dense tensor with data; "
                                  "flatten the state with codec.flatten first")
        if t.dtype not in CODES:
            raise CheckpointError(f"{name}: dtype {t.dtype} has no safetensors code; "
                                  "flatten the state with codec.flatten first")
        t = t.detach().resolve_conj().resolve_neg()
        plan.append((Entry(name, CODES[t.dtype], t.dtype, tuple(t.shape), 0, t.numel() * t.element_size()), t))
    plan.sort(key=lambda p: (-p[0].dtype.itemsize, p[0].name))
    pos = 0
    for e, _ in plan:
        e.begin, e.end, pos = pos, pos + e.end, pos + e.end
    return plan


def _compute_crcs(plan: list[tuple[Entry, torch.Tensor]]) -> None:
    direct = [(e, t) for e, t in plan if t.device.type == "cpu" and t.is_contiguous()]
    for e, value in zip((e for e, _ in direct), crc32_many([_cpu_bytes(t) for _, t in direct])):
        e.crc = value
    for e, t in plan:
        if e.crc is None:
            value = 0
            for chunk in _chunks(t):
                value = _crc(chunk, value)
            e.crc = value


def write(fileobj: BinaryIO, tree: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """Stream a checkpoint (the codec tree + named tensors) to any object with ``.write()``.

    To a seekable file of CPU tensors: the header goes first with zero checksums (same length),
    the tensors follow while a second thread checksums each piece just written, then the header
    is written again in place with the real checksums — so checksumming overlaps the write.
    Otherwise checksums are computed in a first pass, then everything is written once.
    Nothing is written if the input is invalid.
    """
    plan = _plan(tensors)
    if _seekable(fileobj) and all(t.device.type == "cpu" for _, t in plan):
        _write_overlapped(fileobj, tree, plan)
        return
    _compute_crcs(plan)
    fileobj.write(_header.encode(tree, [e for e, _ in plan]))
    for _, t in plan:
        for chunk in _chunks(t):
            fileobj.write(chunk)


def _seekable(f: Any) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _write_overlapped(fileobj: BinaryIO, tree: Any, plan: list[tuple[Entry, torch.Tensor]]) -> None:
    entries = [e for e, _ in plan]
    for e in entries:
        e.crc = 0
    first = _header.encode(tree, entries)  # validates the tree before any byte is written
    start = fileobj.tell()
    fileobj.write(first)

    def crc_piece(e: Entry, piece: memoryview) -> None:
        e.crc = _crc(piece, e.crc)  # one worker: pieces of a tensor are checksummed in order

    with ThreadPoolExecutor(1) as pool:
        pending = []
        for e, t in plan:
            for chunk in _chunks(t):  # CPU tensors: views of the tensor's own memory, stable while we write
                pending.append(pool.submit(crc_piece, e, chunk))
                fileobj.write(chunk)
        for f in pending:
            f.result()
    end = fileobj.tell()
    final = _header.encode(tree, entries)
    if len(final) != len(first):  # fixed-width checksums keep the length; never write a shifted header
        raise CheckpointError("internal error: the header changed length when its checksums were filled in")
    fileobj.seek(start)
    fileobj.write(final)
    fileobj.seek(end)


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
