"""The checkpoint every save/load benchmark writes: a Lightning-shaped dict holding a few big float32
weight tensors plus Adam state (exp_avg, exp_avg_sq) of the same shapes, so weights are ~1/3 of the
bytes. Also the simulated training step used to measure the stall of an async save."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bench.common import MiB, now, summary

N_WEIGHTS = 4  # weight tensors; each has an exp_avg and an exp_avg_sq of the same shape
COLS = 1024


@dataclass
class BenchState:
    ckpt: dict                                  # what torch.save / Lightning / ember save
    flat: dict[str, torch.Tensor]               # the same tensors by name (safetensors)
    nbytes: int                                 # exact bytes of tensor data
    deferred: set[int] = field(default_factory=set)  # storage pointers of all tensors (ember async)

    @property
    def tensors(self) -> list[torch.Tensor]:
        return list(self.flat.values())


def make_state(size_mib: float, seed: int = 0) -> BenchState:
    """A state of about ``size_mib`` MiB of tensor data (exact count in ``nbytes``)."""
    target = int(size_mib * MiB)
    per_tensor_elems = max(COLS, target // (3 * N_WEIGHTS * 4))
    rows = max(1, per_tensor_elems // COLS)
    g = torch.Generator().manual_seed(seed)
    weights = {f"layers.{i}.weight": torch.rand(rows, COLS, generator=g) for i in range(N_WEIGHTS)}
    opt_state = {
        i: {"step": torch.tensor(100.0),
            "exp_avg": torch.rand(rows, COLS, generator=g),
            "exp_avg_sq": torch.rand(rows, COLS, generator=g)}
        for i in range(N_WEIGHTS)
    }
    ckpt = {
        "epoch": 3,
        "global_step": 100,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": weights,
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "optimizer_states": [{
            "state": opt_state,
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                              "amsgrad": False, "params": list(range(N_WEIGHTS))}],
        }],
        "lr_schedulers": [],
        "hyper_parameters": {"lr": 1e-3, "hidden": COLS},
    }
    flat: dict[str, torch.Tensor] = {f"state_dict.{k}": v for k, v in weights.items()}
    for i, s in opt_state.items():
        for k, v in s.items():
            flat[f"optimizer_states.0.state.{i}.{k}"] = v
    nbytes = sum(t.numel() * t.element_size() for t in flat.values())
    deferred = {t.untyped_storage().data_ptr() for t in flat.values()}
    return BenchState(ckpt=ckpt, flat=flat, nbytes=nbytes, deferred=deferred)


class TrainingStep:
    """A stand-in for one training step on the training thread: a few 1024x1024 float32 matmuls,
    calibrated once to take about ``target_ms`` (uses torch's intra-op threads, so it competes with
    a background writer for the cores, as real training does)."""

    def __init__(self, target_ms: float, n: int = 1024) -> None:
        g = torch.Generator().manual_seed(1)
        self.a = torch.randn(n, n, generator=g)
        self.b = torch.randn(n, n, generator=g)
        self.out = torch.empty(n, n)
        self.reps = 1
        self.step()  # warm up
        t = [self._time_one() for _ in range(3)]
        one = summary(t)[1]
        self.reps = max(1, round(target_ms / 1e3 / one))
        self.step_s = summary([self._time_one() for _ in range(3)])[1]

    def _time_one(self) -> float:
        t0 = now()
        self.step()
        return now() - t0

    def step(self) -> None:
        for _ in range(self.reps):
            torch.matmul(self.a, self.b, out=self.out)
