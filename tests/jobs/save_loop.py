"""Saves checkpoints forever, for the kill -9 torture test.

Each state i holds a 4 MiB tensor filled with i, so a torn file would be visible. Every save
replaces DIR/target.ckpt and writes DIR/step-<i>.ckpt; "saved i" is printed after each commit.

usage: python save_loop.py DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import ember


def state(i: int) -> dict:
    return {"global_step": i, "loops": {"fit": {"i": i}}, "w": torch.full((1 << 20,), float(i)),
            "meta": {"i": i, "name": f"state-{i}"}}


def main(folder: str) -> None:
    folder_path = Path(folder)
    target = folder_path / "target.ckpt"
    i = ember.load_checkpoint(target)["global_step"] + 1 if target.exists() else 0
    print("ready", flush=True)
    while True:
        s = state(i)
        ember.save_checkpoint(s, target)
        ember.save_checkpoint(s, folder_path / f"step-{i}.ckpt")
        print(f"saved {i}", flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1])
