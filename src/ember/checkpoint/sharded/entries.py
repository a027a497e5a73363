"""The ``tensors`` field of a sharded folder's metadata: each tensor's dtype, size and chunks, checked.

A metadata may hold hundreds of thousands of entries, so the whole list is first checked in bulk: each
rule (types, lengths, int ranges, chunk bounds, chunk keys) is one pass of C-level ``map``/``set``/
``min``/``max`` over every entry at once, with no Python call per entry; then the coverage of each
tensor split in several chunks is checked in entry order, as the per-entry check does. When every
entry passes, that is the result. When any rule fails for any entry, the entries are checked again
one by one (``_tensor``), which raises the error naming the first bad entry: the refusals and their
messages are the per-entry check's, and the bulk check accepts nothing that check refuses (each of
its rules is one of that check's; tests/checkpoint/test_sharded_entries.py compares the two).
"""

from __future__ import annotations

import math
from functools import partial
from itertools import chain, islice, repeat
from operator import add, eq, itemgetter, le
from typing import Any, Callable, NamedTuple

import torch

from ember.checkpoint.format import decode
from ember.checkpoint.format.dtypes import TORCH_DTYPES
from ember.checkpoint.sharded.cover import MAX_COMPARISONS, check_cover
from ember.checkpoint.sharded.layout import chunk_key
from ember.errors import CheckpointCorruptError

INT_LIMIT = 2**62
_LAYOUT_KEYS = {"dtype", "size", "chunks"}


class Chunk(NamedTuple):  # tuples, not dataclasses: a metadata may hold hundreds of thousands
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str
    key: str


class TensorMeta(NamedTuple):
    dtype: torch.dtype
    size: tuple[int, ...]
    chunks: tuple[Chunk, ...]


def tensors(entries: Any, files: list[str]) -> dict[str, TensorMeta]:
    """The checked layouts of the ``tensors`` field (``[[fqn, layout], ...]``) whose chunks name ``files``
    by index; CheckpointCorruptError naming the first entry that is not well formed."""
    if type(entries) is not list:
        raise CheckpointCorruptError("'tensors' must be a list of [fqn, layout]")
    found = _bulk(entries, files)
    if found is not None:
        return found
    out: dict[str, TensorMeta] = {}
    budget = MAX_COMPARISONS
    for entry in entries:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str or entry[0] in out:
            raise CheckpointCorruptError(f"tensor entry {entry!r:.80} is not a unique [fqn, layout]")
        out[entry[0]], budget = _tensor(entry[0], entry[1], files, budget)
    return out


# ----------------------------------------------------------------------------- in bulk

_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_CHUNK = partial(tuple.__new__, Chunk)
_META = partial(tuple.__new__, TensorMeta)


def _all(values: Any, kind: type) -> bool:
    return set(map(type, values)) <= {kind}


def _small_ints(flat: list) -> bool:
    return _all(flat, int) and (not flat or (min(flat) >= 0 and max(flat) < INT_LIMIT))


def _bulk(entries: list, files: list[str]) -> dict[str, TensorMeta] | None:
    """Every entry's layout when all of them pass every check; None as soon as one rule fails for any."""
    if not entries:
        return {}
    if not _all(entries, list) or set(map(len, entries)) != {2}:
        return None
    fqns, layouts = list(map(_FIRST, entries)), list(map(_SECOND, entries))
    if not _all(fqns, str) or len(set(fqns)) != len(fqns) or not _all(layouts, dict) or set(map(len, layouts)) != {3}:
        return None
    try:
        codes, sizes, lists = (list(map(itemgetter(k), layouts)) for k in ("dtype", "size", "chunks"))
        dtypes = {code: TORCH_DTYPES.get(code) if type(code) is str else None for code in set(codes)}
    except (KeyError, TypeError):  # a key missing, or an unhashable dtype value
        return None
    if None in dtypes.values() or not all(map(_creatable, dtypes.values())):
        return None
    if not (_all(sizes, list) and _all(lists, list)) or max(map(len, sizes)) > 64:
        return None
    if not _small_ints(list(chain.from_iterable(sizes))):
        return None
    counts = list(map(len, lists))
    one = set(counts) == {1}  # one chunk per tensor (what one rank saves): the chunks line up with the entries

    def each(values: list) -> list:  # one per chunk, from one per tensor
        return values if one else list(chain.from_iterable(map(repeat, values, counts)))

    chunks = _bulk_chunks(fqns, sizes, each, list(chain.from_iterable(lists)), files)
    if chunks is None:
        return None
    per_tensor = list(zip(chunks)) if one else list(map(tuple, map(islice, repeat(iter(chunks)), counts)))
    sizes = list(map(tuple, sizes))
    if not one or not all(map(eq, sizes, map(_SECOND, chunks))):  # not one whole chunk each
        budget = MAX_COMPARISONS
        for fqn, size, cs in zip(fqns, sizes, per_tensor):
            budget = check_cover(fqn, size, cs, budget)
    return dict(zip(fqns, map(_META, zip(map(dtypes.__getitem__, codes), sizes, per_tensor))))


def _bulk_chunks(fqns: list, sizes: list, each: Callable[[list], list], chunks: list,
                 files: list[str]) -> list[Chunk] | None:
    """Every chunk, checked (shape, file index, bounds, key), in entry order; None if any fails. ``each``
    turns a list of one value per tensor into one per chunk."""
    if not chunks or not _all(chunks, list) or set(map(len, chunks)) != {4}:
        return None
    offsets, extents, where, keys = (list(map(itemgetter(i), chunks)) for i in range(4))
    if not (_all(where, int) and min(where) >= 0 and max(where) < len(files) and _all(keys, str)):
        return None
    if not (_all(offsets, list) and _all(extents, list)):
        return None
    dims = each(list(map(len, sizes)))  # each chunk's tensor's ndim
    if list(map(len, offsets)) != dims or list(map(len, extents)) != dims:
        return None
    flat_o, flat_e = list(chain.from_iterable(offsets)), list(chain.from_iterable(extents))
    if not (_small_ints(flat_o) and _small_ints(flat_e)):
        return None
    bounds = chain.from_iterable(each(sizes))  # each chunk's tensor's size
    if not all(map(le, map(add, flat_o, flat_e), bounds)):
        return None
    places = list(map(tuple, offsets))
    text = {t: ",".join(map(str, t)) for t in set(places)}  # chunk_key's offsets part, once per distinct offsets
    if not all(map(eq, map(add, each(list(map(add, fqns, repeat("@")))), map(text.__getitem__, places)), keys)):
        return None
    return list(map(_CHUNK, zip(places, map(tuple, extents), map(files.__getitem__, where), keys)))


# ----------------------------------------------------------------------------- one by one


def _ints(v: Any, what: str, n: int | None = None) -> tuple[int, ...]:
    if not _int_list(v, n):
        raise CheckpointCorruptError(f"{what} must be a list of {n if n is not None else 'at most 64'} ints >= 0, "
                                     f"got {v!r:.80}")
    return tuple(v)


def _int_list(v: Any, n: int | None) -> bool:
    return type(v) is list and (len(v) <= 64 if n is None else len(v) == n) and \
        all(type(x) is int and 0 <= x < INT_LIMIT for x in v)


def _tensor(fqn: str, v: Any, files: list[str], budget: int) -> tuple[TensorMeta, int]:
    """One tensor's layout, checked, and what is left of the comparison budget; CheckpointCorruptError
    naming what is wrong with it."""
    if type(v) is not dict or v.keys() != _LAYOUT_KEYS or type(v["chunks"]) is not list:
        raise CheckpointCorruptError(f"tensor {fqn!r:.200}: expected an object with dtype, size and chunks")
    dtype = TORCH_DTYPES.get(v["dtype"]) if type(v["dtype"]) is str else None
    if dtype is None or not _creatable(dtype):
        raise CheckpointCorruptError(f"tensor {fqn!r:.200}: unknown dtype {v['dtype']!r:.40}")
    size = _ints(v["size"], f"tensor {fqn!r:.200}: size")
    n, chunks = len(size), []
    for c in v["chunks"]:
        if type(c) is not list or len(c) != 4 or type(c[2]) is not int or not 0 <= c[2] < len(files) or \
                type(c[3]) is not str:
            raise CheckpointCorruptError(f"tensor {fqn!r:.200}: chunk {c!r:.80} is not [offsets, sizes, file, key]")
        offsets = _ints(c[0], f"tensor {fqn!r:.200}: chunk offsets", n)
        sizes = _ints(c[1], f"tensor {fqn!r:.200}: chunk sizes", n)
        if any(o + s > d for o, s, d in zip(offsets, sizes, size)):
            raise CheckpointCorruptError(f"tensor {fqn!r:.200}: chunk at {list(offsets)} of size {list(sizes)} "
                                         f"lies outside the tensor's size {list(size)}")
        if c[3] != chunk_key(fqn, offsets):
            raise CheckpointCorruptError(f"tensor {fqn!r:.200}: chunk key {c[3]!r:.200} is not the key of its chunk at "
                                         f"{list(offsets)} ({chunk_key(fqn, offsets)!r:.200}): it would read another "
                                         f"entry than tensor {fqn!r:.200}'s")
        chunks.append(Chunk(offsets, sizes, files[c[2]], c[3]))
    budget = check_cover(fqn, size, chunks, budget)
    return TensorMeta(dtype, size, tuple(chunks)), budget


def _creatable(dtype: torch.dtype) -> bool:
    """A dtype a plain dense tensor can have (not a quantized one: those are never stored)."""
    return dtype not in decode._QUANTIZED


def stored_bytes(found: dict[str, TensorMeta]) -> int:
    """The bytes every tensor holds (each element is stored once)."""
    return sum(math.prod(t.size) * t.dtype.itemsize for t in found.values())
