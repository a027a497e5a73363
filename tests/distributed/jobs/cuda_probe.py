"""NCCL on CUDA: each rank on its own device, a DDP step, reduce on the device, loop state (CUDA
random states included) gathered to rank 0 and back. Prints "rank R ok" when every check passes.

usage: torchrun --nproc-per-node N cuda_probe.py
"""

from __future__ import annotations

import torch

from ember.distributed import DDPStrategy
from ember.seed import get_rng_state


def main() -> None:
    strategy = DDPStrategy(accelerator="cuda", timeout=60)
    device = strategy.setup()
    rank = strategy.global_rank
    assert device == torch.device("cuda", strategy.local_rank) and torch.cuda.current_device() == device.index
    assert torch.distributed.get_backend() == "nccl"
    model = strategy.setup_module(torch.nn.Linear(4, 2))
    assert next(model.parameters()).device == device
    model(torch.randn(8, 4, device=device)).sum().backward()
    value = torch.tensor(float(rank + 1), device=device)
    mean = strategy.reduce(value)
    assert mean.device == device and mean.item() == (strategy.world_size + 1) / 2
    assert strategy.broadcast_object({"n": rank}) == {"n": 0}
    state = {"epoch": 0, "batch": 1, "global_step": 1, "epoch_done": False, "rng": get_rng_state(), "data": {}}
    assert "cuda" in state["rng"]
    gathered = strategy.gather_loop_state(state)
    saved = strategy.broadcast_object(gathered)
    back = strategy.scatter_loop_state(saved)
    assert all(torch.equal(a, b) for a, b in zip(back["rng"]["cuda"], state["rng"]["cuda"]))
    strategy.teardown()
    print(f"rank {rank} ok", flush=True)


if __name__ == "__main__":
    main()
