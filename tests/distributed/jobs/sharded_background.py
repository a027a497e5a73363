"""A background sharded save (``ShardedWriter.save(..., blocking=False)``) on 2 gloo ranks holds the state
of the moment it was called: right after it returns, every rank changes its live shards in place
(and runs a collective on the default group, as training would) while the thread writes.

usage: python sharded_background.py OUT --launch 2      (or under torchrun)
Rank 0 writes OUT/expected.ckpt (the full state before the change); the folder is OUT/run.ckpt.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import ember
from ember.checkpoint.storage.locations import resolve
from ember.distributed import launch
from ember.distributed.sharded_saves import ShardedWriter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--launch", type=int, default=0)
    args = ap.parse_args()
    if args.launch:
        launch(args.launch)
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    for layer in (m[0], m[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(m, mesh=mesh)
    expected = get_model_state_dict(m, options=StateDictOptions(full_state_dict=True))
    if dist.get_rank() == 0:
        ember.save_checkpoint({"state_dict": expected}, os.path.join(args.out, "expected.ckpt"))
    writer = ShardedWriter()
    writer.save({"state_dict": m.state_dict(), "global_step": 1}, resolve(os.path.join(args.out, "run.ckpt")),
                blocking=False)
    with torch.no_grad():
        for p in m.parameters():
            p.to_local().add_(1000.0)  # the live shards change while the thread writes
    dist.all_reduce(torch.ones(1))  # training's own collective on the default group meanwhile
    writer.wait()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
