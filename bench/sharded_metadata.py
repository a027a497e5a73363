"""How fast a sharded folder's metadata is checked, per tensor entry (issue 17: >= 100k entries/s in every
reader), and how long the worst metadata the size and bracket limits allow takes.

    python -m bench --only metadata             # part of the report
    PYTHONPATH=src python bench/sharded_metadata.py [ENTRIES] [--worst]

A folder of ENTRIES one-element tensors (one rank file) is written once. Each repeat then times, in a
rotated order: ``metadata.read`` (every check a reader runs on metadata.json before it opens a rank file:
verify, inspect, ls, consolidate, load and resume all start with it), plain ``json.loads`` of the same
bytes (the parse alone, no check: the floor), the rank file's header check (``RankFile``: every reader of
tensors runs it too), and the readers ``folder_summary`` (inspect, ls), ``verify_sharded`` (verify) and
``read_full`` (load, consolidate, a one-process resume) whole. ``--worst`` times the metadata that cost
the most per byte within the limits (most entries, most chunks, most numbers, the comparison budget).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import collect, log, rotated, summary  # noqa: E402

GOAL = 100_000  # entries per second
RF = "rank-00000.safetensors"


@dataclass
class MetadataResults:
    entries: int
    nbytes: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    worst: list[tuple[str, float, float, str]] = field(default_factory=list)  # what, MiB, seconds, outcome


def make(folder: Path, n: int) -> None:
    from ember.checkpoint.sharded import metadata as _meta
    from ember.checkpoint.sharded.layout import chunk_key
    from ember.checkpoint.sharded.rankfile import write_rank_file

    folder.mkdir()
    save_id = "d" * 32
    keys = [chunk_key(f"state_dict.layer{i}.weight", (0,)) for i in range(n)]
    size, digest = write_rank_file(folder / RF, 0, {k: torch.ones(1) for k in keys}, save_id)
    tensors = {f"state_dict.layer{i}.weight": _meta.TensorMeta(torch.float32, (1,), (_meta.Chunk((0,), (1,), RF, k),))
               for i, k in enumerate(keys)}
    tree = {"$": "dict", "items": [[name, {"$": "tensor", "name": name}] for name in tensors]}
    meta = _meta.ShardedMeta(1, {RF: size}, tensors, tree, save_id=save_id, digests={RF: digest})
    (folder / _meta.METADATA).write_bytes(_meta.encode(meta))


def run_metadata(entries: int, repeats: int, workdir: Path, *, worst: bool = True) -> MetadataResults:
    from ember.checkpoint.sharded import full
    from ember.checkpoint.sharded import metadata as _meta
    from ember.checkpoint.sharded.rankfile import RankFile

    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=workdir)) / "many.ckpt"
    make(folder, entries)
    raw = (folder / _meta.METADATA).read_bytes()
    out = MetadataResults(entries, len(raw))
    meta = _meta.read(folder)
    run = {"metadata.read": lambda: _meta.read(folder), "json.loads": lambda: json.loads(raw),
           "rank file header": lambda: RankFile(folder, RF, meta).close(),
           "inspect/ls (folder_summary)": lambda: full.folder_summary(folder),
           "verify (verify_sharded)": lambda: full.verify_sharded(folder),
           "load (read_full)": lambda: full.read_full(folder)}
    log(f"metadata: {entries} entries, {len(raw) / 2**20:.1f} MiB, {repeats} repeat(s)")
    for r in range(repeats):
        for name in rotated(list(run), r):
            collect()
            t0 = time.perf_counter()
            run[name]()
            out.times.setdefault(name, []).append(time.perf_counter() - t0)
        log(f"  r{r} metadata.read {entries / out.times['metadata.read'][-1]:,.0f} entries/s")
    if worst:
        out.worst = worst_cases()
    return out


def _encode(tensors: dict, tree) -> bytes:
    from ember.checkpoint.sharded import metadata as _meta

    m = _meta.ShardedMeta(1, {RF: 2**50}, tensors, tree, save_id="a" * 32, digests={RF: "b" * 64})
    return _meta.encode(m)


def _cases():
    """(what, metadata bytes) for the metadata that costs the most per byte within the limits."""
    from ember.checkpoint.format.header import MAX_CONTAINERS
    from ember.checkpoint.sharded import metadata as _meta
    from ember.checkpoint.sharded.cover import MAX_COMPARISONS
    from ember.checkpoint.sharded.layout import chunk_key

    def one(name, chunks, size, dtype=torch.bool):
        cs = tuple(_meta.Chunk(o, s, RF, chunk_key(name, o)) for o, s in chunks)
        return {name: _meta.TensorMeta(dtype, size, cs)}

    def ref(*names):
        return {"$": "dict", "items": [[n, {"$": "tensor", "name": n}] for n in names]}

    n = MAX_CONTAINERS // 7 - 16  # 7 '[' per one-chunk entry (its tree node included): the most entries
    ts = {}
    for i in range(n):
        ts.update(one(f"t{i}", [((0,), (1,))], (1,)))
    yield f"{n:,} one-chunk tensors (the bracket limit)", _encode(ts, ref(*ts))
    del ts
    n = MAX_CONTAINERS // 3 - 16  # 3 '[' per chunk: the most chunks, one 1-D tensor
    yield f"one tensor of {n:,} chunks", _encode(one("w", [((i,), (1,)) for i in reversed(range(n))], (n,)), ref("w"))
    k = (_meta.MAX_METADATA - 400) // 2
    yield f"{k:,} ints in the state tree (the size limit)", _encode({}, {"$": "dict", "items": [["x", [1] * k]]})
    k = (_meta.MAX_METADATA - 400) // 6
    yield f"{k:,} floats in the state tree (the size limit)", _encode({}, {"$": "dict", "items": [["x", [1e-05] * k]]})
    d = int((2 * MAX_COMPARISONS) ** 0.5) + 2  # a 3-D diagonal: every pairwise comparison, then an overlap
    chunks = [((i, i, i), (d + 1 - i, 1, 1)) for i in range(d)]
    left = (d + 1) * d * d - sum(d + 1 - i for i in range(d))
    chunks += [((d, 0, 0), (1, d, d))] * (left // (d * d)) + [((d, 0, 0), (1, 1, v)) for v in _parts(left % (d * d), d)]
    yield f"a 3-D tensor of {len(chunks):,} chunks (the comparison budget)", _encode(one("w", chunks, (d + 1, d, d)),
                                                                                   ref("w"))


def _parts(total: int, most: int) -> list[int]:
    return [most] * (total // most) + ([total % most] if total % most else [])


def worst_cases() -> list[tuple[str, float, float, str]]:
    from ember.checkpoint.sharded import metadata as _meta
    from ember.errors import CheckpointError

    out = []
    for what, raw in _cases():
        collect()
        t0 = time.perf_counter()
        try:
            _meta.parse(raw, "worst")
            outcome = "accepted"
        except CheckpointError as e:
            outcome = "refused (" + str(e).split(": ", 2)[-1][:60] + "...)"
        dt = time.perf_counter() - t0
        out.append((what, len(raw) / 2**20, dt, outcome))
        log(f"  worst: {what}: {len(raw) / 2**20:.1f} MiB, {dt:.2f} s, {outcome}")
    return out


def section_metadata(res: MetadataResults) -> str:
    def rate(vals: list[float]) -> str:
        lo, mid, hi = summary([res.entries / v for v in vals])
        return f"{lo:,.0f} / **{mid:,.0f}** / {hi:,.0f}"

    loads = res.times["json.loads"]
    head = f"## Sharded metadata check ({res.entries:,} one-chunk tensors, metadata {res.nbytes / 2**20:.1f} MiB)"
    lines = [head, "",
             f"Goal (issue 17): ≥ {GOAL:,} entries/s in every reader. Per repeat, rotated order; entries/s = "
             "entries ÷ time (min / median / max); × json.loads = time ÷ plain `json.loads` of the same bytes "
             "in the same repeat (the parse alone, no check).", "",
             "| step | entries/s (min / median / max) | × json.loads (median) | goal |", "|---|---|---|---|"]
    for name, vals in res.times.items():
        ratio = summary([v / b for v, b in zip(vals, loads)])[1]
        goal = f"≥ {GOAL:,}/s" if name == "metadata.read" else ""
        lines.append(f"| {name} | {rate(vals)} | {ratio:.2f}× | {goal} |")
    if res.worst:
        lines += ["", "The worst metadata the limits allow (`metadata.parse`, once each):", "",
                  "| metadata | MiB | seconds | outcome |", "|---|---|---|---|"]
        lines += [f"| {w} | {mib:.1f} | {s:.2f} | {o} |" for w, mib, s, o in res.worst]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        res = run_metadata(n, 3, Path(tmp), worst="--worst" in sys.argv)
    print(section_metadata(res))


if __name__ == "__main__":
    main()
