"""A sharded folder's tensor entries are checked in bulk (every rule over all entries at once) and, when
any entry fails, one by one to name it: large metadata is accepted, a bad entry among thousands is
refused with the per-entry message, and the bulk check never accepts what the per-entry check refuses."""

from __future__ import annotations

import json
import random

import pytest
import torch

from ember.checkpoint.sharded import entries as _entries
from ember.checkpoint.sharded import is_sharded_checkpoint, read_full, verify_sharded
from ember.checkpoint.sharded import metadata as _meta
from ember.checkpoint.sharded.layout import chunk_key
from ember.checkpoint.sharded.rankfile import write_rank_file
from ember.errors import CheckpointCorruptError, CheckpointError
from test_sharded_hostile import resign

RF = "rank-00000.safetensors"
N = 20_000


def many(folder, n: int, rows: int = 1) -> None:
    """A folder of ``n`` tensors of ``rows`` elements, each stored as one chunk per element."""
    folder.mkdir()
    save_id = "e" * 32
    keys = {f"t{i}": [chunk_key(f"t{i}", (r,)) for r in range(rows)] for i in range(n)}
    size, digest = write_rank_file(folder / RF, 0, {k: torch.full((1,), float(i)) for i, ks in enumerate(keys.values())
                                                    for k in ks}, save_id)
    tensors = {fqn: _meta.TensorMeta(torch.float32, (rows,), tuple(_meta.Chunk((r,), (1,), RF, k)
                                                                   for r, k in enumerate(ks)))
               for fqn, ks in keys.items()}
    tree = {"$": "dict", "items": [[fqn, {"$": "tensor", "name": fqn}] for fqn in tensors]}
    meta = _meta.ShardedMeta(1, {RF: size}, tensors, tree, save_id=save_id, digests={RF: digest})
    (folder / _meta.METADATA).write_bytes(_meta.encode(meta))


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    folder = tmp_path_factory.mktemp("large") / "large.ckpt"
    many(folder, N)
    return folder


def test_a_metadata_of_twenty_thousand_tensors_is_accepted(large):
    meta = _meta.read(large)
    assert len(meta.tensors) == N and meta.tensors[f"t{N - 1}"].chunks[0].key == f"t{N - 1}@0"
    assert is_sharded_checkpoint(large)
    assert read_full(large)[f"t{N - 1}"].item() == N - 1


@pytest.mark.parametrize("case", ["key", "outside", "bool size", "duplicate"])
def test_one_bad_entry_among_twenty_thousand_is_refused_by_name(large, tmp_path, case):
    bad = tmp_path / "bad.ckpt"
    bad.mkdir()
    (bad / RF).write_bytes((large / RF).read_bytes())
    (bad / _meta.METADATA).write_bytes((large / _meta.METADATA).read_bytes())

    def mutate(obj):
        entry = obj["tensors"][N - 7]
        if case == "key":
            entry[1]["chunks"][0][3] = "t0@0"
        elif case == "outside":
            entry[1]["chunks"][0][0] = [1]
        elif case == "bool size":
            entry[1]["size"] = [True]
        else:
            obj["tensors"][N - 7] = obj["tensors"][3]

    resign(bad / _meta.METADATA, mutate)
    message = {"key": f"tensor 't{N - 7}': chunk key 't0@0' is not the key", "outside": "lies outside",
               "bool size": f"tensor 't{N - 7}': size must be a list", "duplicate": "is not a unique"}[case]
    for reader in (verify_sharded, read_full):
        with pytest.raises(CheckpointCorruptError, match=message):
            reader(bad)


def test_a_tensor_of_many_chunks_among_many_is_accepted_and_one_overlap_refused(tmp_path):
    many(tmp_path / "good.ckpt", 500, rows=8)
    assert read_full(tmp_path / "good.ckpt")["t499"].tolist() == [499.0] * 8

    def overlap(obj):
        obj["tensors"][250][1]["chunks"][5][0] = [4]
        obj["tensors"][250][1]["chunks"][5][3] = "t250@4"

    resign(tmp_path / "good.ckpt" / _meta.METADATA, overlap)
    with pytest.raises(CheckpointError, match=r"tensor 't250': chunks at \[4\] and \[4\] overlap"):
        _meta.read(tmp_path / "good.ckpt")


def grid(fqn: str) -> list:
    """A [2, 2, 2] tensor as eight one-element chunks: 12 pairwise comparisons to check."""
    cells = [(a, b, c) for a in range(2) for b in range(2) for c in range(2)]
    return [fqn, {"dtype": "float32", "size": [2, 2, 2],
                  "chunks": [[list(o), [1, 1, 1], 0, chunk_key(fqn, o)] for o in cells]}]


def test_the_comparison_budget_is_shared_by_every_tensor_of_the_metadata(monkeypatch):
    assert len(_entries.tensors([grid("a"), grid("b")], [RF])) == 2
    monkeypatch.setattr(_entries, "MAX_COMPARISONS", 20)  # one tensor fits (12), two do not (24)
    assert len(_entries.tensors([grid("a")], [RF])) == 1
    with pytest.raises(CheckpointCorruptError, match="tensor 'b': its 8 chunks are laid out too intricately"):
        _entries.tensors([grid("a"), grid("b")], [RF])


_ODD = [0, -1, 1, 2, 3, 2**62, True, None, 1.0, "", "float32", "bool", "qint8", "a@0", "b@1", "b@0,0", [], [0], [1],
        [0, 0], [2], [1, 1], {}, {"dtype": "float32"}]


def _leaves(node, path=()):
    yield path
    if isinstance(node, (list, dict)):
        for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
            yield from _leaves(v, path + (k,))


def test_the_bulk_check_accepts_only_what_the_per_entry_check_accepts():
    """Random edits of a small ``tensors`` list (whole and split tensors): wherever the bulk check gives a
    result or refuses (coverage), the per-entry check gives the same result or the same refusal."""
    pristine = [["a", {"dtype": "float32", "size": [2, 3], "chunks": [[[0, 0], [2, 3], 0, "a@0,0"]]}],
                ["b", {"dtype": "int64", "size": [4], "chunks": [[[0], [2], 0, "b@0"], [[2], [2], 1, "b@2"]]}],
                ["c", {"dtype": "bool", "size": [], "chunks": [[[], [], 1, "c@"]]}]]
    files = [RF, "rank-00001.safetensors"]
    paths = [p for p in _leaves(pristine) if p]
    rng = random.Random(19)
    for _ in range(3000):
        obj = json.loads(json.dumps(pristine))
        for _ in range(rng.randint(1, 2)):
            path = rng.choice(paths)
            try:
                node = obj
                for step in path[:-1]:
                    node = node[step]
                node[path[-1]] = json.loads(json.dumps(rng.choice(_ODD)))
            except (KeyError, IndexError, TypeError):
                continue
        bulk = _outcome(lambda: _entries._bulk(obj, files))
        if bulk != ("ok", None):  # None: the bulk check left the entries to the per-entry check
            assert bulk == _outcome(lambda: _per_entry(obj, files)), obj


def _outcome(check):
    try:
        return "ok", check()
    except CheckpointCorruptError as e:
        return "refused", str(e)


def _per_entry(obj, files):
    out, budget = {}, _entries.MAX_COMPARISONS
    for entry in obj:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str or entry[0] in out:
            raise CheckpointCorruptError("not a unique entry")
        out[entry[0]], budget = _entries._tensor(entry[0], entry[1], files, budget)
    return out
