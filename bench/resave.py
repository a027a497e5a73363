"""Re-saving a name through the Trainer: ``trainer.save_checkpoint(path)`` onto an existing checkpoint
of the same size, beside a raw write+fsync of the same tensor bytes to a new file (the disk's speed).

The model holds ``size_mib / 3`` of float32 weights; one AdamW step gives it exp_avg and exp_avg_sq of
the same size, so the state is ``size_mib``. Methods alternate, ``os.sync()`` runs before each timed
save so that neither pays for the other's dirty pages, and the ratio is taken per repeat."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bench.common import MiB, collect, log, now, remove, tensor_memoryview, write_all

COLS = 1024


@dataclass
class ResaveResult:
    size_mib: float
    nbytes: int
    times: dict[str, list[float]] = field(default_factory=dict)


def _model(size_mib: float):
    import ember

    rows = max(1, int(size_mib * MiB / 3 / 4 / 4 / COLS))

    class Big(ember.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(COLS, rows, bias=False) for _ in range(4))

        def training_step(self, batch, batch_idx):
            return sum(layer.weight.sum() for layer in self.layers) * batch[0].sum()

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    return Big()


def _raw(tensors: list[torch.Tensor], path: Path) -> None:
    with open(path, "xb", buffering=0) as f:
        for t in tensors:
            write_all(f, tensor_memoryview(t))
        os.fsync(f.fileno())


def run_resave(size_mib: float, repeats: int, workdir: Path) -> ResaveResult:
    import ember
    from ember.checkpoint.storage.temporaries import wait_discards
    from torch.utils.data import DataLoader, TensorDataset

    workdir.mkdir(parents=True, exist_ok=True)
    model = _model(size_mib)
    trainer = ember.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False, default_root_dir=str(workdir))
    trainer.fit(model, DataLoader(TensorDataset(torch.ones(1, 1)), batch_size=1))
    tensors = [p.detach() for p in model.parameters()]
    tensors += [v for s in trainer.optimizers[0].state.values() for v in s.values() if v.numel() > 1]
    res = ResaveResult(size_mib, sum(t.numel() * t.element_size() for t in tensors))
    target = workdir / "resave.ckpt"
    trainer.save_checkpoint(target)  # the name exists before every timed save
    log(f"resave: {res.nbytes / MiB:.0f} MiB state")
    for r in range(repeats):
        for method in (("trainer", "raw") if r % 2 == 0 else ("raw", "trainer")):
            wait_discards()
            os.sync()
            collect()
            fresh = workdir / f"raw-{r}.bin"
            t0 = now()
            if method == "raw":
                _raw(tensors, fresh)
            else:
                trainer.save_checkpoint(target)
            res.times.setdefault(method, []).append(now() - t0)
            remove(fresh)
        log(f"  r{r} trainer {res.times['trainer'][-1]:.3f} s  raw {res.times['raw'][-1]:.3f} s")
    wait_discards()
    remove(target)
    return res
