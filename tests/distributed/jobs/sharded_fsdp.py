"""FSDP2 (``fully_shard`` on CPU, gloo) and ember's sharded checkpoints, under torchrun.

usage: torchrun --nproc-per-node N sharded_fsdp.py save OUT    train a step, save_sharded OUT/run.ckpt, and
                                                               the full state dict as OUT/full.ckpt (reference)
       torchrun --nproc-per-node N sharded_fsdp.py load OUT    a freshly sharded model, load_sharded
                                                               OUT/run.ckpt; rank 0 writes OUT/loaded-N.ckpt
       torchrun --nproc-per-node N sharded_fsdp.py loop OUT    save OUT/last.ckpt again and again (step i:
                                                               every weight = i); prints "saved i" on rank 0
       python sharded_fsdp.py MODE OUT --launch N               the same through ember's launcher
OUT may be a URL (s3://...): the folders are then saved to and loaded from the object store.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import ember
from ember.checkpoint.sharded import load_sharded, save_sharded
from ember.distributed import launch


def model(mesh, width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    # 3 rows of 10 do not split evenly over 3 ranks... nor 9 over 2: uneven shards on purpose
    m = torch.nn.Sequential(torch.nn.Linear(width, 9), torch.nn.ReLU(), torch.nn.Linear(9, 3))
    for layer in (m[0], m[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(m, mesh=mesh)
    return m


def state_of(m: torch.nn.Module, step: int) -> dict:
    return {"state_dict": m.state_dict(), "epoch": 1, "global_step": step, "loops": {"fit": {"epoch": 1}},
            "hyper_parameters": {"lr": 0.1, "layers": (8, 9, 3), "name": "tiny"}, "replicated": torch.arange(5)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("save", "load", "loop"))
    ap.add_argument("out")
    ap.add_argument("--launch", type=int, default=0)
    ap.add_argument("--width", type=int, default=8, help="the first layer's inputs (large: big rank files)")
    args = ap.parse_args()
    if args.launch:
        launch(args.launch)
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    m = model(mesh, args.width)
    out = args.out
    if args.mode == "save":
        opt = torch.optim.AdamW(m.parameters(), lr=0.1)
        m(torch.randn(4, 8)).sum().backward()
        opt.step()
        state = state_of(m, 1)
        state["optimizer_states"] = [get_optimizer_state_dict(m, opt)]  # DTensors, and plain 0-dim `step`s
        save_sharded(state, os.path.join(out, "run.ckpt"))
        whole = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(m, options=whole)
        full_optim = get_optimizer_state_dict(m, opt, options=whole)
        if dist.get_rank() == 0:
            ember.save_checkpoint({"state_dict": dict(full), "optimizer": full_optim}, os.path.join(out, "full.ckpt"))
    elif args.mode == "load":
        state = state_of(m, 0)
        got = load_sharded(state, os.path.join(out, "run.ckpt"))
        full = get_model_state_dict(m, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if dist.get_rank() == 0:
            keep = {k: got[k] for k in ("epoch", "global_step", "hyper_parameters", "replicated")}
            ember.save_checkpoint({"state_dict": dict(full), **keep},
                                  os.path.join(out, f"loaded-{dist.get_world_size()}.ckpt"))
    else:
        i = 0
        while True:
            i += 1
            with torch.no_grad():
                for p in m.parameters():
                    p.fill_(float(i))
            save_sharded({"state_dict": m.state_dict(), "global_step": i, "loops": {"fit": {}}},
                         os.path.join(out, "last.ckpt"))
            if dist.get_rank() == 0:
                print(f"saved {i}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
