"""A ``.ckpt`` header's tensor entries are checked all at once, and one by one when any fails (to name
it): the bulk check gives exactly the per-entry check's entries, and never accepts what it refuses."""

from __future__ import annotations

import json
import random

from ember.checkpoint.format import entries as _entries
from ember.errors import CheckpointCorruptError

PRISTINE = {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "I64", "shape": [], "data_offsets": [24, 32]},
            "c": {"dtype": "BOOL", "shape": [0, 5], "data_offsets": [32, 32]}}
ODD = [0, -1, 1, 8, 24, 32, 2**63, 2**40, True, None, 1.0, "", "F32", "BF16", "Q8", [], [0], [2, 3], [24, 32],
       [0, 24], [32, 24], [2**62, 4], {}, {"dtype": "F32"}]


def _paths(node, path=()):
    if path:
        yield path
    if isinstance(node, (list, dict)):
        for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
            yield from _paths(v, path + (k,))


def _outcome(check):
    try:
        return "ok", check()
    except CheckpointCorruptError as e:
        return "refused", str(e)


def test_the_bulk_check_gives_the_per_entry_checks_entries_and_refusals():
    paths = list(_paths(PRISTINE))
    rng = random.Random(7)
    seen = set()
    for _ in range(3000):
        obj = json.loads(json.dumps(PRISTINE))
        for _ in range(rng.randint(1, 2)):
            node = obj
            path = rng.choice(paths)
            try:
                for step in path[:-1]:
                    node = node[step]
                node[path[-1]] = json.loads(json.dumps(rng.choice(ODD)))
            except (KeyError, IndexError, TypeError):
                continue
        bulk = _entries._bulk_entries(obj)
        one_by_one = _outcome(lambda: [_entries._entry("f", name, e) for name, e in obj.items()])
        seen.add((bulk is None, one_by_one[0]))
        if bulk is not None:
            assert one_by_one == ("ok", bulk), obj
    assert (False, "ok") in seen and (True, "refused") in seen


def test_a_well_formed_header_is_checked_in_bulk():
    assert [e.name for e in _entries.check_entries("f", PRISTINE, 32)] == ["a", "b", "c"]
    assert _entries._bulk_entries(PRISTINE) is not None
