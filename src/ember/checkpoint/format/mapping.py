"""Verified zero-copy reads: a local checkpoint file mapped copy-on-write, its CRC-32C checked over
the mapped bytes on every core, and tensors handed out as views of the mapping.

The mapping is private (``MAP_PRIVATE``): a write to a loaded tensor copies that page into this
process and never reaches the file. The file's pages are shared with the page cache until then, so
a load costs no copy. Deleting the file, or replacing it by a later save (ember commits by rename,
never writing in place), leaves the loaded tensors as they were: the mapping holds the old file's
data until the last tensor viewing it is gone, and only then is its disk space freed. A file
rewritten in place by another program is outside that guarantee (the kernel shows a private
mapping's unwritten pages as the file's current bytes).
"""

from __future__ import annotations

import mmap as _mmap
import threading
import weakref
from typing import Any, Callable

import torch

from ember.checkpoint.format.checksums import crc32_many
from ember.checkpoint.format.header import Header
from ember.errors import CheckpointError

__all__ = ["map_file", "check_mapped", "mapped_tensors", "views_a_file", "unshare", "to_device"]

SMALL = 4096  # tensors below this many bytes are copied out, so a kept scalar never pins a whole file
_MADV_POPULATE_READ = getattr(_mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+: page tables filled, no copy
_LIVE: "weakref.WeakKeyDictionary[_mmap.mmap, tuple[int, int]]" = weakref.WeakKeyDictionary()
_LIVE_LOCK = threading.Lock()


def map_file(fd: int, label: str, *, populate: bool) -> _mmap.mmap:
    """A private (copy-on-write) mapping of the whole file ``fd``. ``populate`` fills its page tables
    from the page cache up front (read-only, so no page is copied; kernels without it fault pages in
    as they are read). Populating with a writable ``MAP_POPULATE`` would copy every page: not used."""
    try:
        if hasattr(_mmap, "MAP_PRIVATE"):
            buf = _mmap.mmap(fd, 0, flags=_mmap.MAP_PRIVATE, prot=_mmap.PROT_READ | _mmap.PROT_WRITE)
        else:  # Windows: the same copy-on-write view
            buf = _mmap.mmap(fd, 0, access=_mmap.ACCESS_COPY)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot map checkpoint {label}: {e}") from None
    if populate and hasattr(buf, "madvise"):
        try:
            buf.madvise(_MADV_POPULATE_READ)
        except OSError:
            pass  # an older kernel: the checksum pass faults the pages in instead
    if len(buf):
        with _LIVE_LOCK:
            _LIVE[buf] = _span(buf)
    return buf


def _span(buf: _mmap.mmap) -> tuple[int, int]:
    start = torch.frombuffer(buf, dtype=torch.uint8, count=1).data_ptr()
    return start, start + len(buf)


def check_mapped(buf: _mmap.mmap, hdr: Header, label: str, on_error: Callable[[Any, int], Exception]) -> None:
    """CRC-32C of every tensor's mapped bytes (big tensors in pieces on every core; the CRC releases the
    GIL); raises ``on_error(entry, computed)`` for the first tensor whose bytes do not match."""
    base, view = hdr.data_start, memoryview(buf)
    try:
        got = crc32_many([view[base + e.begin: base + e.end] for e in hdr.entries])
    finally:
        view.release()
    for e, value in zip(hdr.entries, got):
        if value != e.crc:
            raise on_error(e, value)


def mapped_tensors(buf: _mmap.mmap, hdr: Header) -> dict[str, torch.Tensor]:
    """Every tensor of the file as a view of ``buf`` (tensors under ``SMALL`` bytes, and misaligned ones
    of foreign safetensors files, are copied out)."""
    tensors = {}
    for e in hdr.entries:
        n = e.end - e.begin
        if n == 0:
            tensors[e.name] = torch.empty(e.shape, dtype=e.dtype)
            continue
        t = torch.frombuffer(buf, dtype=e.dtype, count=n // e.dtype.itemsize, offset=hdr.data_start + e.begin)
        if n < SMALL or t.data_ptr() % e.dtype.itemsize:
            t = t.clone()
        tensors[e.name] = t.view(e.shape)
    return tensors


def views_a_file(t: torch.Tensor) -> bool:
    """Whether the tensor's memory lies in a checkpoint file mapped by this module (and still mapped)."""
    if t.device.type != "cpu" or not t.untyped_storage().nbytes():
        return False
    p = t.untyped_storage().data_ptr()
    with _LIVE_LOCK:
        spans = list(_LIVE.values())
    return any(a <= p < b for a, b in spans)


def unshare(optimizer: torch.optim.Optimizer) -> None:
    """Give the optimizer its own copy of state tensors that view a mapped file.

    ``Optimizer.load_state_dict`` keeps the loaded tensors when dtype and device already match; left
    as views, they would keep the checkpoint file's disk space allocated for the whole run (even after
    the file is deleted), and their first update would copy page by page."""
    for state in optimizer.state.values():
        for k, v in list(state.items()):
            if isinstance(v, torch.Tensor) and views_a_file(v):
                state[k] = v.clone()


def to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy verified CPU tensors (views of a mapping) to ``device``. To CUDA, through two reused pinned
    staging buffers, so each copy runs at pinned speed and the next piece is staged while one is in flight."""
    if device.type != "cuda":
        return {k: t.to(device) for k, t in tensors.items()}
    piece = min(64 * 2**20, max((t.numel() * t.element_size() for t in tensors.values()), default=0)) or 1
    try:
        stages = [torch.empty(piece, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
    except RuntimeError:  # no pinned memory available: pageable copies, same result
        return {k: t.to(device) for k, t in tensors.items()}
    done: list[Any] = [None, None]
    out, i = {}, 0
    for name, t in tensors.items():
        dst = torch.empty(t.shape, dtype=t.dtype, device=device)
        src, flat = t.reshape(-1).view(torch.uint8), dst.view(-1).view(torch.uint8) if t.numel() else None
        for s in range(0, src.numel(), piece):
            m = min(piece, src.numel() - s)
            if done[i] is not None:
                done[i].synchronize()  # the stage's previous copy has left it
            stages[i][:m].copy_(src[s: s + m])
            flat[s: s + m].copy_(stages[i][:m], non_blocking=True)  # type: ignore[index]
            done[i] = torch.cuda.Event()
            done[i].record(torch.cuda.current_stream(device))  # the stream the copy was queued on
            i ^= 1
        out[name] = dst
    torch.cuda.synchronize(device)
    return out
