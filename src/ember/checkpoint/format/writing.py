"""Writing a ``.ckpt`` container (docs/FORMAT.md): the header, then every tensor's bytes, with the
CRC-32C of each tensor in the header. ``container.write`` is this module's ``write``."""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Mapping

import torch

from ember.checkpoint.format import header as _header
from ember.checkpoint.format.checksums import crc as _crc
from ember.checkpoint.format.checksums import crc32_many
from ember.checkpoint.format.dtypes import CODES
from ember.checkpoint.format.header import Entry
from ember.errors import CheckpointError

CHUNK = 64 * 2**20  # largest piece copied off an accelerator / handed to write() at once


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


def write(fileobj: BinaryIO, tree: Any, tensors: Mapping[str, torch.Tensor], *, synced: bool = False) -> None:
    """Stream a checkpoint (the codec tree + named tensors) to any object with ``.write()``.

    To a seekable file of CPU tensors: the header goes first with zero checksums (same length),
    the tensors follow, then the header is written again in place with the real checksums. The
    checksums are computed while the bytes are on their way: ``synced`` (the caller fsyncs the file
    when this returns, as a store's commit does) and a file with a descriptor: after the write, on
    every core, while a second thread sends the data to the disk (``fdatasync``: the caller's fsync
    then has the header page left), so the write itself runs at the speed of a plain write; else on
    a second thread, piece by piece as each is written. Otherwise (a stream, or tensors on an
    accelerator) checksums are computed in a first pass, then everything is written once.
    Nothing is written if the input is invalid.
    """
    plan = _plan(tensors)
    if _seekable(fileobj) and all(t.device.type == "cpu" for _, t in plan):
        fd = _fd(fileobj) if synced else None
        if fd is None:
            _write_overlapped(fileobj, tree, plan)
        else:
            _write_then_checksum(fileobj, fd, tree, plan)
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


def _fd(f: Any) -> int | None:
    try:
        return f.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def _write_then_checksum(fileobj: BinaryIO, fd: int, tree: Any, plan: list[tuple[Entry, torch.Tensor]]) -> None:
    """The header with zero checksums and every tensor's bytes, written; then the checksums, on every
    core, while a second thread flushes those bytes to the disk; then the header again, with them."""
    entries = [e for e, _ in plan]
    start, first = _placeholder_header(fileobj, tree, entries)
    for _, t in plan:
        for chunk in _chunks(t):  # CPU tensors: views of their own memory, unchanged until this returns
            fileobj.write(chunk)
    fileobj.flush()
    failed: list[OSError] = []
    flushing = threading.Thread(target=_datasync, args=(fd, failed), name="ember-datasync", daemon=True)
    flushing.start()
    try:
        for e in entries:
            e.crc = None
        _compute_crcs(plan)
        _final_header(fileobj, tree, entries, start, first)
    finally:
        flushing.join()
    if failed:  # a failed flush is reported once: a later fsync may not see it again
        raise failed[0]


def _datasync(fd: int, failed: list) -> None:
    try:
        getattr(os, "fdatasync", os.fsync)(fd)
    except OSError as e:
        failed.append(e)


def _write_overlapped(fileobj: BinaryIO, tree: Any, plan: list[tuple[Entry, torch.Tensor]]) -> None:
    entries = [e for e, _ in plan]
    start, first = _placeholder_header(fileobj, tree, entries)

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
    _final_header(fileobj, tree, entries, start, first)


def _placeholder_header(fileobj: BinaryIO, tree: Any, entries: list[Entry]) -> tuple[int, bytes]:
    """The header with zero checksums, written where the file is; (its offset, its bytes). Encoding it first
    validates the tree before any byte is written."""
    for e in entries:
        e.crc = 0
    first = _header.encode(tree, entries)
    start = fileobj.tell()
    fileobj.write(first)
    return start, first


def _final_header(fileobj: BinaryIO, tree: Any, entries: list[Entry], start: int, first: bytes) -> None:
    """The header again, with the checksums now in ``entries``, over the placeholder; the file is left at its end."""
    end = fileobj.tell()
    final = _header.encode(tree, entries)
    if len(final) != len(first):  # fixed-width checksums keep the length; never write a shifted header
        raise CheckpointError("internal error: the header changed length when its checksums were filled in")
    fileobj.seek(start)
    fileobj.write(final)
    fileobj.seek(end)


