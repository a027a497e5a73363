"""Prints the peak extra resident memory (MiB) of one save of a 256 MiB state.

usage: python save_memory.py DIR sync|async
"""

from __future__ import annotations

import sys

import torch

import ember
from ember.checkpoint.writer import CheckpointWriter

MIB = 1 << 20


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def main(folder: str, mode: str) -> None:
    params = [torch.randn(16 * MIB // 4) for _ in range(16)]  # 16 x 16 MiB = 256 MiB
    state = {"state_dict": {f"w{i}": p for i, p in enumerate(params)}}
    ember.save_checkpoint({"warm": torch.ones(4)}, f"{folder}/warm.ckpt")  # imports and thread pools
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark
    before = rss("VmRSS")
    if mode == "sync":
        ember.save_checkpoint(state, f"{folder}/big.ckpt")
    else:
        w = CheckpointWriter()
        w.save(state, f"{folder}/big.ckpt", blocking=False, deferred={p.untyped_storage().data_ptr() for p in params})
        w.wait()
    print((rss("VmHWM") - before) / MIB)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
