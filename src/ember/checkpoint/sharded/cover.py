"""Exact coverage of a tensor by its chunks: every element stored exactly once, for any number of
chunks, in O(n log n) for the layouts sharding makes.

The chunks' volumes must add up to the tensor's; then they cover it exactly when no two overlap.
Overlaps are found by a sweep along the dimension with the most distinct chunk offsets: chunks enter
and leave an active set as the sweep passes their start and end, and each entering chunk is checked
against the active ones in the other dimensions: against its two neighbours in a sorted list when one
other dimension is left (1-D and 2-D tensors: O(log n) each), pairwise otherwise (bounded: a layout
that needs more comparisons than ``MAX_COMPARISONS`` is refused as unreadable, never passed).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

from ember.errors import CheckpointCorruptError

MAX_COMPARISONS = 20_000_000


def _overlap(fqn: str, a: Any, b: Any) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"tensor {fqn!r:.200}: chunks at {list(a.offsets)} and {list(b.offsets)} overlap")


def check_cover(fqn: str, size: Sequence[int], chunks: Sequence[Any]) -> None:
    """Raise CheckpointCorruptError unless ``chunks`` (with ``offsets`` and ``sizes``, already inside the
    tensor's bounds) store every element of a tensor of ``size`` exactly once."""
    if len(chunks) == 1 and chunks[0].sizes == tuple(size):  # the common case, fast: one chunk, the whole tensor
        return
    volume = sum(math.prod(c.sizes) for c in chunks)
    if volume != math.prod(size):
        raise CheckpointCorruptError(f"tensor {fqn!r:.200}: its chunks hold {volume} elements, but its size "
                                     f"{list(size)} has {math.prod(size)}")
    boxes = [c for c in chunks if math.prod(c.sizes)]
    if len(boxes) < 2 or not size:  # a 0-d tensor: its one element, once (the volumes add up)
        return
    sweep = max(range(len(size)), key=lambda d: len({c.offsets[d] for c in boxes}))
    rest = [d for d in range(len(size)) if d != sweep]
    events = sorted([(c.offsets[sweep] + c.sizes[sweep], 0, i) for i, c in enumerate(boxes)] +
                    [(c.offsets[sweep], 1, i) for i, c in enumerate(boxes)])
    if len(rest) <= 1:
        _sweep_intervals(fqn, boxes, events, rest[0] if rest else None)
    else:
        _sweep_pairwise(fqn, boxes, events, rest)


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


def _sweep_pairwise(fqn: str, boxes: Sequence[Any], events: list, dims: list[int]) -> None:
    active: dict[int, Any] = {}
    budget = MAX_COMPARISONS
    for _, kind, i in events:
        c = boxes[i]
        if kind == 0:
            active.pop(i, None)
            continue
        budget -= len(active)
        if budget < 0:
            raise CheckpointCorruptError(f"tensor {fqn!r:.200}: its {len(boxes)} chunks are laid out too intricately "
                                         "to check that they cover it exactly once; it is not read")
        for p in active.values():
            if all(p.offsets[d] < c.offsets[d] + c.sizes[d] and c.offsets[d] < p.offsets[d] + p.sizes[d] for d in dims):
                raise _overlap(fqn, p, c)
        active[i] = c
