"""FSDP2 on CUDA with NCCL: the device mesh on "cuda", the sharded parameters on this rank's device, a
training step, and the sharded state saved and put back into a fresh model. Prints "rank R ok" when every
check passes.

usage: torchrun --nproc-per-node N fsdp_cuda_probe.py
"""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from ember.distributed import FSDPStrategy
from fsdp_common import build, global_batches, optimizer, shard

FULL = StateDictOptions(full_state_dict=True)


def main() -> None:
    strategy = FSDPStrategy(accelerator="cuda", timeout=60)
    device = strategy.setup()
    rank, world = strategy.global_rank, strategy.world_size
    assert device == torch.device("cuda", strategy.local_rank) and torch.distributed.get_backend() == "nccl"
    assert strategy.device_mesh.device_type == "cuda" and strategy.device_mesh.size() == world
    model = strategy.setup_module(build(seed=rank))
    assert all(isinstance(p, DTensor) and p.device == device for p in model.parameters())
    opt = optimizer(model.parameters())
    batch = tuple(t.to(device) for t in shard(global_batches()[0], rank, world))
    strategy.training_step(model, batch, 0).backward()
    opt.step()
    saved = strategy.state_for_save(model, [opt])
    assert all(isinstance(v, DTensor) and v.device == device for v in saved["state_dict"].values())
    fresh = strategy.setup_module(build(seed=7))
    fresh_opt = optimizer(fresh.parameters())
    strategy.load_state(fresh, [fresh_opt], saved)
    want, got = get_model_state_dict(model, options=FULL), get_model_state_dict(fresh, options=FULL)
    assert all(torch.equal(want[k], got[k]) for k in want)
    strategy.teardown()
    print(f"rank {rank} ok", flush=True)


if __name__ == "__main__":
    main()
