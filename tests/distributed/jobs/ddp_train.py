"""A hand-written DDP training loop on ember.distributed (no Trainer): 3 epochs of a tiny model with
dropout, shuffled data and AdamW. Ranks are seeded differently after the model is built, so they draw
different dropout masks: a resume that gave a rank another rank's random state would change the weights.

--stop-at S   save rank 0's checkpoint (every rank's loop state gathered into it) after step S and stop
--resume      continue from that checkpoint (each rank takes its own loop state back)
--fail-rank R --fail-step S   rank R raises ValueError("boom at step S") as step S begins
--stuck-rank R                rank R sleeps outside any collective from --fail-step on
Writes the final weights to OUT (rank 0) when training completes.

usage: python ddp_train.py OUT CKPT [options] [--launch N]     or under torchrun
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.checkpoint import state as run_state
from ember.loops.data import ResumableLoader
from ember.distributed import DDPStrategy, launch
from ember.seed import get_rng_state, set_rng_state

EPOCHS = 3


class Loop:
    """The job's Stateful loop part: what FitLoop's state_dict()/load_state_dict() would carry."""

    def __init__(self, strategy: DDPStrategy, path: str) -> None:
        self.strategy, self.path = strategy, path
        self.gathered: dict | None = None
        self.resume: dict | None = None

    def state_dict(self) -> dict:
        return self.gathered

    def load_state_dict(self, state: dict) -> None:
        self.resume = state  # checkpoint.state.restore has taken this rank's own entries out of loops.fit.ranks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("ckpt")
    ap.add_argument("--stop-at", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--fail-rank", type=int, default=-1)
    ap.add_argument("--fail-step", type=int, default=0)
    ap.add_argument("--stuck-rank", type=int, default=-1)
    ap.add_argument("--grace", type=float, default=30.0)
    ap.add_argument("--launch", type=int, default=0)
    args = ap.parse_args()
    if args.launch:
        launch(args.launch, grace=args.grace)
    strategy = DDPStrategy(accelerator="cpu", timeout=60, grace=args.grace)
    strategy.setup()
    with strategy.failure_guard():
        train(strategy, args)
    strategy.teardown()


def train(strategy: DDPStrategy, args) -> None:
    rank = strategy.global_rank
    ember.seed_everything(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    ddp = strategy.setup_module(model)
    ember.seed_everything(100 + rank)
    x = torch.randn(48, 6, generator=torch.Generator().manual_seed(1))
    dataset = TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
    loader = strategy.distributed_loader(
        DataLoader(dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5)))
    data = ResumableLoader(loader)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
    loop = Loop(strategy, args.ckpt)
    run = run_state.RunState(model=ddp, loop=loop, optimizers=[opt])
    epoch, batch, step = 0, 0, 0
    if args.resume:
        ckpt = ember.load_checkpoint(args.ckpt)
        run_state.check_resumable(ckpt, args.ckpt, run)
        run_state.restore(run, ckpt, args.ckpt)
        epoch, batch, step = loop.resume["epoch"], loop.resume["batch"], loop.resume["global_step"]
    while epoch < EPOCHS:
        resume, loop.resume = loop.resume, None
        it, batch = data.epoch_iterator(epoch, batch if resume else 0, resume["data"] if resume else None)
        if resume:
            set_rng_state(resume["rng"])
        for xb, yb in it:
            if rank == args.stuck_rank and step + 1 >= args.fail_step:
                while True:  # stuck outside any collective
                    time.sleep(1)
            if rank == args.fail_rank and step + 1 == args.fail_step:
                raise ValueError(f"boom at step {step + 1}")
            out = ddp(xb)
            loss = nn.functional.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, batch = step + 1, batch + 1
            if step == args.stop_at:
                save(strategy, run, loop, data, epoch, batch, step, args.ckpt)
                return
        epoch, batch = epoch + 1, 0
    if strategy.is_global_zero:
        ember.save_checkpoint({"state_dict": model.state_dict()}, args.out)


def save(strategy, run, loop, data, epoch, batch, step, path) -> None:
    """What Trainer.dump_checkpoint + the writer will do: gather on every rank, write on rank 0."""
    state = {"epoch": epoch, "batch": batch, "global_step": step, "epoch_done": False,
             "data": data.state_dict(), "rng": get_rng_state(), "accumulated_grads": {}}
    loop.gathered = strategy.gather_loop_state(state)
    if strategy.is_global_zero:
        ember.save_checkpoint(run_state.collect(run), path)
    strategy.barrier()


if __name__ == "__main__":
    main()
