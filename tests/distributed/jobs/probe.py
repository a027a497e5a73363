"""Probe a 2-process job: environment, ranks, sampler shards, reduce, loop-state gather/scatter.

Each rank writes what it saw to OUT/rank<R>.json; the tests read those.

usage: python probe.py OUT [--chdir DIR] [--launch N]     (plain python: ember's launcher starts the others)
       torchrun --nproc-per-node 2 probe.py OUT
"""

from __future__ import annotations

import argparse
import json
import os
import random

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import ember
from ember.checkpoint import state as run_state
from ember.distributed import DDPStrategy, launch, rank_zero_only
from ember.seed import get_rng_state


def shards(loader, epochs=(0, 1)):
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out.append([int(i) for (x,) in loader for i in x])
    return out


def same_rng(a, b) -> bool:
    return (a["python"][1] == b["python"][1] and torch.equal(a["torch"], b["torch"])
            and torch.equal(a["numpy"]["keys"], b["numpy"]["keys"]) and a["numpy"]["pos"] == b["numpy"]["pos"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--launch", type=int, default=0)
    ap.add_argument("--chdir", help="change the working directory before launching (the script path may be relative)")
    args = ap.parse_args()
    args.out = os.path.abspath(args.out)
    if args.chdir:
        os.chdir(args.chdir)
    if args.launch:
        launch(args.launch)
    strategy = DDPStrategy(accelerator="cpu", timeout=60)
    device = strategy.setup()
    strategy.setup()  # idempotent
    rank = strategy.global_rank
    facts: dict = {"rank": rank, "local_rank": strategy.local_rank, "world_size": strategy.world_size,
                   "is_global_zero": strategy.is_global_zero, "device": str(device), "pid": os.getpid(),
                   "backend": torch.distributed.get_backend(), "master_addr": os.environ["MASTER_ADDR"]}

    @rank_zero_only
    def only_zero():
        return "ran"

    facts["rank_zero_only"] = only_zero()

    # -- sampler injection
    data = TensorDataset(torch.arange(20))
    shuffled = strategy.distributed_loader(
        DataLoader(data, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(7), drop_last=False))
    facts["shuffled"] = shards(shuffled)
    facts["shuffled_batch_size"] = shuffled.batch_size
    facts["sampler_shuffle"] = shuffled.sampler.shuffle
    facts["sequential"] = shards(strategy.distributed_loader(DataLoader(data, batch_size=4)))
    own = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, shuffle=False))
    facts["left_alone"] = strategy.distributed_loader(own) is own

    # -- training_step through DDP's forward: gradients are all-reduced
    class Stepper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def training_step(self, batch, batch_idx):
            return (self.w * batch).sum() * (batch_idx + 1)

    stepper = Stepper()
    wrapped = strategy.setup_module(stepper)
    loss = strategy.training_step(wrapped, torch.full((3,), float(rank + 1)), 0)  # a different batch per rank
    loss.backward()
    facts["step_grad"] = stepper.w.grad.tolist()
    facts["forward_restored"] = "forward" not in vars(stepper)

    # -- reduce
    mine = torch.tensor(float(rank + 1))
    facts["reduce"] = {op: strategy.reduce(mine, op).item() for op in ("mean", "sum", "max", "min")}
    facts["reduce_int_mean"] = strategy.reduce(rank + 1).item()
    facts["reduce_input_unchanged"] = mine.item()
    facts["any_rank"] = [strategy.any_rank(rank == 1), strategy.any_rank(False)]
    facts["broadcast"] = strategy.broadcast_object({"from": rank}, src=1)

    # -- loop state: each rank's random state and data position, through rank 0's file and back
    ember.seed_everything(100 + rank)
    random.random()
    torch.rand(3)
    loader = shuffled
    from ember.loops.data import ResumableLoader

    resumable = ResumableLoader(loader)
    it, _ = resumable.epoch_iterator(0)
    next(it)
    state = {"epoch": 0, "batch": 1, "global_step": 1, "epoch_done": False, "data": resumable.state_dict(),
             "rng": get_rng_state(), "accumulated_grads": {}}
    gathered = strategy.gather_loop_state(state)
    facts["gathered_is_none"] = gathered is None
    path = os.path.join(args.out, "state.ckpt")
    if rank == 0:
        class Fixed:
            def state_dict(self):
                return gathered

        ckpt = run_state.collect(run_state.RunState(model=torch.nn.Linear(1, 1), loop=Fixed()))
        facts["top_rng_is_rank0"] = same_rng(ckpt["rng"], state["rng"])
        saved_ranks = ckpt["loops"]["fit"]["ranks"]
        facts["ranks_saved"] = len(saved_ranks)
        facts["ranks_differ"] = not same_rng(saved_ranks[0]["rng"], saved_ranks[1]["rng"])
        ember.save_checkpoint(ckpt, path)
    strategy.barrier()
    ckpt = ember.load_checkpoint(path)
    back = strategy.scatter_loop_state(run_state.loop_state(ckpt, path), path)
    facts["scatter_rng_own"] = same_rng(back["rng"], state["rng"])
    facts["scatter_data_own"] = torch.equal(back["data"]["torch"], state["data"]["torch"]) and \
        back["data"]["now"]["generators"]["loader"].equal(state["data"]["now"]["generators"]["loader"])
    facts["scatter_position"] = [back["epoch"], back["batch"], back["global_step"]]
    facts["scatter_drops_ranks"] = "ranks" not in back
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(facts, f)
    strategy.teardown()


if __name__ == "__main__":
    main()
