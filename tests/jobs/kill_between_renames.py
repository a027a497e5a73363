"""Saves FOLDER/target.ckpt twice (global_step 0, then 1) and SIGKILLs itself inside the second
commit: ``before`` the rename that puts the new file at the name (the old one already has its second,
temporary name), or ``after`` it (before the old one's temporary name is removed). A real kill at an
exact moment: this program wraps ``os.replace``; the library has no test hooks.

usage: python kill_between_renames.py FOLDER before|after
"""

from __future__ import annotations

import os
import signal
import sys

import torch

import ember


def state(i: int) -> dict:
    return {"global_step": i, "w": torch.full((1 << 18,), float(i))}


def main(folder: str, moment: str) -> None:
    target = os.path.join(folder, "target.ckpt")
    ember.save_checkpoint(state(0), target)
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.fspath(dst) == target and moment == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst, *args, **kwargs)
        if os.fspath(dst) == target and moment == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    ember.save_checkpoint(state(1), target)
    print("not killed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
