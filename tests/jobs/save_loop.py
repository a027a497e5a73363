"""Saves checkpoints forever, for the kill -9 torture tests.

Each state i holds a tensor filled with i (4 MiB, or SIZE_MIB), so a torn file would be visible.
Every save replaces FOLDER/target.ckpt and writes FOLDER/step-<i>.ckpt; "saved i" is printed after
each commit. FOLDER is a local folder or a URL (s3://bucket/prefix).

usage: python save_loop.py FOLDER [SIZE_MIB]
"""

from __future__ import annotations

import sys

import torch

import ember
from ember.checkpoint.storage.locations import open_store


def state(i: int, mib: int) -> dict:
    return {"global_step": i, "loops": {"fit": {"i": i}}, "w": torch.full((mib << 18,), float(i)),
            "meta": {"i": i, "name": f"state-{i}"}}


def main(folder: str, mib: int) -> None:
    folder = folder.rstrip("/")
    target = f"{folder}/target.ckpt"
    i = ember.load_checkpoint(target)["global_step"] + 1 if open_store(folder).exists("target.ckpt") else 0
    print("ready", flush=True)
    while True:
        s = state(i, mib)
        ember.save_checkpoint(s, target)
        ember.save_checkpoint(s, f"{folder}/step-{i}.ckpt")
        print(f"saved {i}", flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4)
