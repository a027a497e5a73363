"""CRC-32C (Castagnoli): one buffer, many buffers in parallel pieces, and the combination of two CRCs.

The ``crc32c`` package computes it with SSE4.2 / ARMv8 instructions and releases the GIL, so pieces
of one buffer can be checked on several threads and their CRCs combined (``crc32_combine``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from crc32c import crc32c as crc

__all__ = ["crc", "crc32_combine", "crc32_many"]

_PIECE = 16 * 2**20  # bytes checked by one thread at a time
_SHIFT_OPS: list[list[int]] = []  # _SHIFT_OPS[k]: 32 columns of "append 2**k zero bytes" as a GF(2) matrix


def _apply(op: list[int], v: int) -> int:
    out, j = 0, 0
    while v:
        if v & 1:
            out ^= op[j]
        v >>= 1
        j += 1
    return out


def _shift(value: int, nbytes: int) -> int:
    """The CRC-32 register after ``nbytes`` more zero bytes, minus the CRC of those zeros (linear in value)."""
    if not _SHIFT_OPS:
        zero = crc(b"\0")
        _SHIFT_OPS.append([crc(b"\0", 1 << j) ^ zero for j in range(32)])
    k = 0
    while nbytes:
        while len(_SHIFT_OPS) <= k:
            last = _SHIFT_OPS[-1]
            _SHIFT_OPS.append([_apply(last, col) for col in last])
        if nbytes & 1:
            value = _apply(_SHIFT_OPS[k], value)
        nbytes >>= 1
        k += 1
    return value


def crc32_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """CRC of A+B from CRC(A), CRC(B) and len(B) (CRC-32C here; the method works for any CRC-32)."""
    return _shift(crc_a, len_b) ^ crc_b


def crc32_many(views: list[memoryview]) -> list[int]:
    """CRC-32C of each buffer; big ones are cut into pieces checked in parallel (the CRC releases the GIL)."""
    workers = min(os.cpu_count() or 1, 16)
    if workers < 2 or sum(len(v) for v in views) < 4 * _PIECE:
        return [crc(v) for v in views]
    jobs = [(i, v[s : s + _PIECE]) for i, v in enumerate(views) for s in range(0, len(v), _PIECE)]
    with ThreadPoolExecutor(workers) as pool:
        crcs = list(pool.map(lambda job: crc(job[1]), jobs))
    out = [0] * len(views)
    for (i, piece), value in zip(jobs, crcs):
        out[i] = crc32_combine(out[i], value, len(piece))
    return out
