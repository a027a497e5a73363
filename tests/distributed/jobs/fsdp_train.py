"""FSDP2 jobs on ember.distributed.FSDPStrategy (no Trainer), each writing what the tests compare.

train OUT   2 ranks, each seeded differently (rank 0's weights must win): STEPS AdamW steps over the
            global batches of fsdp_common, each rank on its part. Rank 0 writes OUT/fsdp.pt (the full
            weights); every rank saves the folder checkpoint OUT/folder; rank 0 writes OUT/ref.pt (the
            full weights and named optimizer state) and OUT/facts.json (what was sharded, configure_model).
load OUT    any number of ranks: the folder into a fresh model; rank 0 writes OUT/loaded-<world>.pt.
plain OUT   OUT/plain.ckpt (one process's single-file checkpoint) into a sharded model, then one more
            step on the first global batch; rank 0 writes OUT/from-plain.pt.
fit OUT     3 epochs with dropout (different streams per rank) and shuffled shards; --save-at S saves the
            folder OUT/mid (loop state included) after step S and goes on; rank 0 writes OUT/final.pt at
            the end. --resume: continue from OUT/mid instead; rank 0 writes OUT/resumed.pt.

usage: python fsdp_train.py MODE OUT [--save-at S] [--resume] [--launch N]     or under torchrun
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.loops.data import ResumableLoader
from ember.distributed import FSDPStrategy, launch
from ember.distributed.fsdp import optimizer_state_from_plain
from ember.seed import get_rng_state, set_rng_state
from fsdp_common import build, global_batches, load_folder, optimizer, save_folder, shard

FULL = StateDictOptions(full_state_dict=True)


def full_state(model, opt) -> dict:
    """Collective: the whole weights and named optimizer state (what the tests compare)."""
    return {"weights": get_model_state_dict(model, options=FULL),
            "optimizer": get_optimizer_state_dict(model, opt, options=FULL)}


class SelfSharding(nn.Module):
    """A module that shards itself in configure_model (only its encoder; ember must not add units)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.head = nn.Linear(4, 4), nn.Linear(4, 2)
        self.mesh_seen = None

    def configure_model(self) -> None:
        self.mesh_seen = self.device_mesh
        fully_shard(self.encoder, mesh=self.device_mesh)


class BuildsOnly(nn.Module):
    """A module whose configure_model only builds its layers, each rank differently (rank 0's must win)."""

    def configure_model(self) -> None:
        self.layer = nn.Linear(4, 4)
        nn.init.constant_(self.layer.weight, float(torch.distributed.get_rank()))


def train(strategy: FSDPStrategy, out: Path) -> None:
    rank, world = strategy.global_rank, strategy.world_size
    model = strategy.setup_module(build(seed=rank))  # rank 1 starts elsewhere: rank 0's weights are copied
    opt = optimizer(model.parameters())
    for i, batch in enumerate(global_batches()):
        loss = strategy.training_step(model, shard(batch, rank, world), i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    weights = get_model_state_dict(model, options=FULL)
    if rank == 0:
        torch.save({"weights": weights}, out / "fsdp.pt")
    save_folder(strategy.state_for_save(model, [opt]), out / "folder")
    ref = full_state(model, opt)
    selfish = strategy.setup_module(SelfSharding())
    built = strategy.setup_module(BuildsOnly())
    built_weight = get_model_state_dict(built, options=FULL)["layer.weight"]
    shard_of_mine = model.body[0].weight.detach()  # a DTensor: this rank's shard
    gathered = strategy.gather_loop_state({"epoch": 0, "rng": get_rng_state(), "data": {"rank": rank},
                                           "accumulated_grads": {"body.0.weight": shard_of_mine}})
    facts = {"gathered": [r["data"]["rank"] for r in gathered["ranks"]], "rank0_data": gathered.get("data"),
             "own_grads": gathered["accumulated_grads"]["body.0.weight"] is shard_of_mine,
             "built_units": sorted(n for n, m in built.named_modules() if isinstance(m, FSDPModule)),
             "built_from_rank0": bool((built_weight == 0).all())}
    if rank == 0:
        torch.save(ref, out / "ref.pt")
        facts.update(units=sorted(n for n, m in model.named_modules() if isinstance(m, FSDPModule)),
                     dtensors=all(isinstance(p, DTensor) for p in model.parameters()),
                     local_rows=model.body[0].weight.to_local().shape[0],
                     mesh_set=selfish.mesh_seen is strategy.device_mesh and selfish.device_mesh is strategy.device_mesh,
                     self_units=sorted(n for n, m in selfish.named_modules() if isinstance(m, FSDPModule)))
    (out / f"facts-{rank}.json").write_text(json.dumps(facts))


def load(strategy: FSDPStrategy, out: Path) -> None:
    model = strategy.setup_module(build(seed=7))
    opt = optimizer(model.parameters())
    template = strategy.state_for_save(model, [opt])
    strategy.load_state(model, [opt], load_folder(template, out / "folder"))
    got = full_state(model, opt)
    if strategy.is_global_zero:
        torch.save(got, out / f"loaded-{strategy.world_size}.pt")


def from_plain(strategy: FSDPStrategy, out: Path) -> None:
    rank, world = strategy.global_rank, strategy.world_size
    ckpt = ember.load_checkpoint(out / "plain.ckpt")
    model = strategy.setup_module(build(seed=7))
    opt = optimizer(model.parameters())
    named = optimizer_state_from_plain(ckpt["optimizer_states"][0], model, opt)
    strategy.load_state(model, [opt], {"state_dict": ckpt["state_dict"], "optimizer_states": [named]})
    after_load = copy.deepcopy(full_state(model, opt))  # its 0-dim `step` tensors are the optimizer's own
    loss = strategy.training_step(model, shard(global_batches()[0], rank, world), 0)
    loss.backward()
    opt.step()
    after_step = get_model_state_dict(model, options=FULL)
    if rank == 0:
        torch.save({"after_load": after_load, "after_step": after_step}, out / "from-plain.pt")


def fit(strategy: FSDPStrategy, out: Path, save_at: int, resume: bool) -> None:
    """As tests/distributed/jobs/ddp_train.py, with the weights and optimizer in a folder checkpoint."""
    rank = strategy.global_rank
    model = strategy.setup_module(build(seed=0, dropout=0.3))
    ember.seed_everything(100 + rank)  # a different dropout stream per rank
    x = torch.randn(48, 6, generator=torch.Generator().manual_seed(1))
    dataset = TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
    data = ResumableLoader(strategy.distributed_loader(
        DataLoader(dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5))))
    opt = optimizer(model.parameters())
    epoch, batch, step, loop = 0, 0, 0, None
    if resume:
        saved = load_folder({"model": strategy.state_for_save(model, [opt])}, out / "mid")
        strategy.load_state(model, [opt], saved["model"])
        loop = strategy.scatter_loop_state(saved["loop"], out / "mid")
        epoch, batch, step = loop["epoch"], loop["batch"], loop["global_step"]
    while epoch < 3:
        it, batch = data.epoch_iterator(epoch, batch if loop else 0, loop["data"] if loop else None)
        if loop:
            set_rng_state(loop["rng"])
        loop = None
        for xb, yb in it:
            loss = strategy.training_step(model, (xb, yb), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, batch = step + 1, batch + 1
            if step == save_at:
                state = {"epoch": epoch, "batch": batch, "global_step": step, "epoch_done": False,
                         "data": data.state_dict(), "rng": get_rng_state(), "accumulated_grads": {}}
                save_folder({"model": strategy.state_for_save(model, [opt]),
                             "loop": strategy.gather_loop_state(state)}, out / "mid")
        epoch, batch = epoch + 1, 0
    weights = get_model_state_dict(model, options=FULL)
    if rank == 0:
        torch.save(weights, out / ("resumed.pt" if resume else "final.pt"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "load", "plain", "fit"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--save-at", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--launch", type=int, default=0)
    args = ap.parse_args()
    if args.launch:
        launch(args.launch)
    strategy = FSDPStrategy(accelerator="cpu", timeout=60)
    strategy.setup()
    with strategy.failure_guard():
        if args.mode == "fit":
            fit(strategy, args.out, args.save_at, args.resume)
        else:
            {"train": train, "load": load, "plain": from_plain}[args.mode](strategy, args.out)
    strategy.teardown()


if __name__ == "__main__":
    main()
