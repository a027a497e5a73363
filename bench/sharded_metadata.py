"""How fast a sharded folder's metadata is checked, per tensor entry, and the memory it takes.

    PYTHONPATH=src python bench/sharded_metadata.py [ENTRIES]

Writes a folder of ENTRIES one-element tensors (one rank file), then times ``metadata.read`` (every
check a reader runs before it reads a rank file) and reports the peak extra memory (tracemalloc).
Issue 17 asks for >= 100k entries per second.
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

from ember.checkpoint.sharded import metadata as _meta
from ember.checkpoint.sharded.layout import chunk_key
from ember.checkpoint.sharded.rankfile import write_rank_file


def make(folder: Path, n: int) -> None:
    folder.mkdir()
    rf, save_id = "rank-00000.safetensors", "d" * 32
    keys = [chunk_key(f"state_dict.layer{i}.weight", (0,)) for i in range(n)]
    size, digest = write_rank_file(folder / rf, 0, {k: torch.ones(1) for k in keys}, save_id)
    tensors = {f"state_dict.layer{i}.weight": _meta.TensorMeta(torch.float32, (1,), (_meta.Chunk((0,), (1,), rf, k),))
               for i, k in enumerate(keys)}
    tree = {"$": "dict", "items": [[name, {"$": "tensor", "name": name}] for name in tensors]}
    meta = _meta.ShardedMeta(1, {rf: size}, tensors, tree, save_id=save_id, digests={rf: digest})
    (folder / _meta.METADATA).write_bytes(_meta.encode(meta))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "many.ckpt"
        make(folder, n)
        raw = (folder / _meta.METADATA).stat().st_size
        tracemalloc.start()
        t = time.perf_counter()
        _meta.read(folder)
        dt = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(f"{n} entries, metadata {raw / 2**20:.1f} MiB: read+checked in {dt:.2f} s "
          f"({n / dt:,.0f} entries/s), peak {peak / 2**20:.0f} MiB traced")


if __name__ == "__main__":
    main()
