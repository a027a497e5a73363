"""Exact coverage of a tensor by its chunks: every element stored exactly once, for any number of
chunks, in O(n log n) for the layouts sharding makes.

The chunks' volumes must add up to the tensor's; then they cover it exactly when no two overlap.
Overlaps are found by a sweep along the dimension with the most distinct chunk offsets: chunks enter
and leave an active set as the sweep passes their start and end, and each entering chunk is checked
against the active ones in the other dimensions: against its two neighbours in a sorted list when one
other dimension is left (1-D and 2-D tensors: O(log n) each), pairwise otherwise (bounded: layouts
that need more comparisons than ``MAX_COMPARISONS``, all the tensors of a metadata together, are refused
as unreadable, never passed; the bound keeps the worst metadata's check around a second).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from operator import add, itemgetter, lt
from typing import Any

from ember.errors import CheckpointCorruptError

# pairwise comparisons for one metadata, all its tensors together: ~0.1-0.3 us each in CPython, so at
# most a second or so; a 3-D tensor sharded as a 100x100 grid in two dimensions needs 1M
MAX_COMPARISONS = 4_000_000


def _overlap(fqn: str, a: Any, b: Any) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"tensor {fqn!r:.200}: chunks at {list(a.offsets)} and {list(b.offsets)} overlap")


def check_cover(fqn: str, size: Sequence[int], chunks: Sequence[Any], budget: int = MAX_COMPARISONS) -> int:
    """Raise CheckpointCorruptError unless ``chunks`` (with ``offsets`` and ``sizes``, already inside the
    tensor's bounds) store every element of a tensor of ``size`` exactly once. ``budget``: the pairwise
    comparisons this check may make; returns what is left of it (for the next tensor of the metadata)."""
    if len(chunks) == 1 and chunks[0].sizes == tuple(size):  # the common case, fast: one chunk, the whole tensor
        return budget
    volume = sum(math.prod(c.sizes) for c in chunks)
    if volume != math.prod(size):
        raise CheckpointCorruptError(f"tensor {fqn!r:.200}: its chunks hold {volume} elements, but its size "
                                     f"{list(size)} has {math.prod(size)}")
    boxes = [c for c in chunks if math.prod(c.sizes)]
    if len(boxes) < 2 or not size or _end_to_end(boxes, size):  # a 0-d tensor: its one element (volumes add up)
        return budget
    sweep = max(range(len(size)), key=lambda d: len({c.offsets[d] for c in boxes}))
    rest = [d for d in range(len(size)) if d != sweep]
    events = sorted([(c.offsets[sweep] + c.sizes[sweep], 0, i) for i, c in enumerate(boxes)] +
                    [(c.offsets[sweep], 1, i) for i, c in enumerate(boxes)])
    if len(rest) <= 1:
        _sweep_intervals(fqn, boxes, events, rest[0] if rest else None)
        return budget
    return _sweep_pairwise(fqn, boxes, events, rest, budget)


def _end_to_end(boxes: Sequence[Any], size: Sequence[int]) -> bool:
    """Whether the chunks split the tensor along one dimension only (whole in every other: what FSDP and
    a 1-D tensor give), end to end from 0 to its size there: then they cover it exactly. C-level passes
    only; False sends the layout to the general sweep, which finds what is wrong, if anything."""
    offsets, sizes = [c.offsets for c in boxes], [c.sizes for c in boxes]
    split = [d for d in range(len(size)) if set(map(itemgetter(d), sizes)) != {size[d]}]
    if len(split) > 1 or any(set(map(itemgetter(d), offsets)) != {0} for d in range(len(size)) if d not in split):
        return False
    if not split:  # every chunk is the whole tensor (the volumes add up: there is one)
        return len(boxes) == 1
    spans = sorted(zip(map(itemgetter(split[0]), offsets), map(itemgetter(split[0]), sizes)))
    starts = list(map(itemgetter(0), spans))
    ends = list(map(add, starts, map(itemgetter(1), spans)))
    return starts[0] == 0 and ends[-1] == size[split[0]] and starts[1:] == ends[:-1]


def _sweep_intervals(fqn: str, boxes: Sequence[Any], events: list, dim: int | None) -> None:
    """The active chunks' intervals in ``dim`` (the whole [0, 1) when the tensor has one dimension)
    are kept disjoint and sorted by start: an entering chunk is compared with its two neighbours."""
    starts: list[int] = []
    active: list[int] = []
    for _, kind, i in events:
        c = boxes[i]
        a, b = (c.offsets[dim], c.offsets[dim] + c.sizes[dim]) if dim is not None else (0, 1)
        at = bisect.bisect_left(starts, a)
        if kind == 0:  # leaves: the starts of disjoint non-empty intervals are unique
            if at < len(active) and active[at] == i:
                del starts[at], active[at]
            continue
        if at > 0:
            p = boxes[active[at - 1]]
            if (p.offsets[dim] + p.sizes[dim] if dim is not None else 1) > a:
                raise _overlap(fqn, p, c)
        if at < len(active) and starts[at] < b:
            raise _overlap(fqn, boxes[active[at]], c)
        starts.insert(at, a)
        active.insert(at, i)


def _sweep_pairwise(fqn: str, boxes: Sequence[Any], events: list, dims: list[int], budget: int) -> int:
    """Each entering chunk against every active one, in the other dimensions (each chunk's low and high
    corners there made tuples once: a comparison is two C-level passes, no Python call per dimension)."""
    lo = [tuple(c.offsets[d] for d in dims) for c in boxes]
    hi = [tuple(c.offsets[d] + c.sizes[d] for d in dims) for c in boxes]
    active: dict[int, None] = {}
    for _, kind, i in events:
        if kind == 0:
            active.pop(i, None)
            continue
        budget -= len(active)
        if budget < 0:
            raise CheckpointCorruptError(f"tensor {fqn!r:.200}: its {len(boxes)} chunks are laid out too intricately "
                                         "to check that they cover it exactly once (the metadata's layouts need "
                                         f"more than {MAX_COMPARISONS} comparisons); it is not read")
        low, high = lo[i], hi[i]
        for j in active:
            if all(map(lt, lo[j], high)) and all(map(lt, low, hi[j])):
                raise _overlap(fqn, boxes[j], boxes[i])
        active[i] = None
    return budget
