"""The tensor entries of a ``.ckpt`` header (``{name: {"dtype", "shape", "data_offsets"}}``), checked
(docs/FORMAT.md, section 2): every entry well formed, the entries tiling the data section exactly.

A header may hold hundreds of thousands of entries: they are first checked all at once, each rule one
C-level pass over every entry (``_bulk_entries``); when any entry fails a rule, they are checked one by
one (``_entry``), which names the first bad one, so the refusals and their messages are ``_entry``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from itertools import chain
from operator import attrgetter, eq, itemgetter, le, mul, sub
from typing import Any

import torch

from ember.checkpoint.format.dtypes import DTYPES
from ember.errors import CheckpointCorruptError


@dataclass
class Entry:
    name: str
    code: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # relative to the start of the data section
    end: int
    crc: int | None = None


def corrupt(label: str, msg: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"corrupt checkpoint {label}: {msg}")


def _int_list(v: Any, n: int | None) -> bool:
    return type(v) is list and (n is None or len(v) == n) and all(type(x) is int and 0 <= x < 2**63 for x in v)


def _entry(label: str, name: str, e: Any) -> Entry:
    if type(e) is not dict or set(e) != {"dtype", "shape", "data_offsets"}:
        got = sorted(e) if type(e) is dict else type(e).__name__
        raise corrupt(label, f"tensor {name!r}: expected an object with dtype, shape and data_offsets, "
                             f"got {got!r:.200}")
    code, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
    dtype = DTYPES.get(code) if type(code) is str else None
    if dtype is None:
        raise corrupt(label, f"tensor {name!r} has unknown dtype {code!r:.40} (this ember reads {', '.join(DTYPES)})")
    if not _int_list(shape, None) or len(shape) > 64 or math.prod(max(d, 1) for d in shape) >= 2**62:
        raise corrupt(label, f"tensor {name!r}: shape must be a list of at most 64 non-negative ints, "
                             f"got {shape!r:.80}")
    if not _int_list(offsets, 2) or offsets[0] > offsets[1]:
        raise corrupt(label, f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end, "
                             f"got {offsets!r:.80}")
    nbytes = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise corrupt(label, f"tensor {name!r}: shape {shape} of {code} needs {nbytes} bytes "
                             f"but data_offsets {offsets} span {offsets[1] - offsets[0]}")
    return Entry(name, code, dtype, tuple(shape), offsets[0], offsets[1])


_ENTRY_FIELDS = ("dtype", "shape", "data_offsets")
_AT_LEAST_ONE = partial(map, partial(max, 1))


def _bulk_entries(obj: dict) -> list[Entry] | None:
    """Every entry, when all of them pass ``_entry``'s checks, each checked for all entries at once in
    C-level passes (no Python call per entry); None when any fails (``_entry`` then names it)."""
    values = list(obj.values())
    if not values or set(map(type, values)) != {dict} or set(map(len, values)) != {3}:
        return None
    try:  # three keys each, these three: exactly the fields; a dtype that is not hashable: TypeError
        codes, shapes, offsets = (list(map(itemgetter(k), values)) for k in _ENTRY_FIELDS)
        dtypes = {code: DTYPES.get(code) if type(code) is str else None for code in set(codes)}
    except (KeyError, TypeError):
        return None
    if None in dtypes.values() or set(map(type, shapes)) != {list} or max(map(len, shapes)) > 64:
        return None
    if set(map(type, offsets)) != {list} or set(map(len, offsets)) != {2}:
        return None
    flat = list(chain(chain.from_iterable(shapes), chain.from_iterable(offsets)))
    if set(map(type, flat)) - {int} or (flat and (min(flat) < 0 or max(flat) >= 2**63)):
        return None
    if max(map(math.prod, map(_AT_LEAST_ONE, shapes))) >= 2**62:
        return None
    begins, ends = list(map(itemgetter(0), offsets)), list(map(itemgetter(1), offsets))
    sizes = map(mul, map(math.prod, shapes), map(attrgetter("itemsize"), map(dtypes.__getitem__, codes)))
    if not all(map(le, begins, ends)) or not all(map(eq, map(sub, ends, begins), sizes)):
        return None
    return list(map(Entry, obj, codes, map(dtypes.__getitem__, codes), map(tuple, shapes), begins, ends))


def check_entries(label: str, obj: dict, data_len: int) -> list[Entry]:
    entries = _bulk_entries(obj) or [_entry(label, name, e) for name, e in obj.items()]
    entries.sort(key=attrgetter("begin", "end"))
    pos = 0
    for x in entries:
        if x.begin != pos:
            what = "leaves a hole before it" if x.begin > pos else "overlaps the previous tensor"
            raise corrupt(label, f"tensor {x.name!r} starts at data byte {x.begin} "
                                 f"but the previous one ends at {pos}: it {what}")
        pos = x.end
    if pos > data_len:
        raise corrupt(label, f"the file is truncated: the tensors need {pos} bytes of data "
                             f"but only {data_len} follow the header")
    if pos < data_len:
        raise corrupt(label, f"{data_len - pos} unexpected bytes after the last tensor "
                             "(the file was appended to or its header is wrong)")
    return entries
