"""Ends right after collectives on tensors the script then drops: the shape that let a gloo worker
thread outlive the interpreter's finalization (aborting a finished job with "terminate called without
an active exception"). Joins through ember (``ember.distributed.init``), and exits normally.

usage: torchrun --nproc-per-node N exit_race.py      python exit_race.py --launch N
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist

from ember.distributed import init, launch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--launch", type=int, default=0)
    args = ap.parse_args()
    if args.launch:
        launch(args.launch)
    init("cpu")
    total = torch.ones(3)
    dist.all_reduce(total)
    assert total[0].item() == dist.get_world_size()
    out = [torch.empty(1) for _ in range(dist.get_world_size())]
    dist.all_gather(out, torch.tensor([float(dist.get_rank())]))


if __name__ == "__main__":
    main()
