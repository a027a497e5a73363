"""Loop benchmark: a tiny MLP (32 -> 64 -> 2, batch 32, Adam) trained for one epoch of N steps on the
same random TensorDataset/DataLoader by a hand-written PyTorch loop, by ember.Trainer (defaults:
progress bar and CSV logger on, checkpointing off) and by Lightning's Trainer. Output of every
variant goes to /dev/null (a non-TTY) alike. Each time covers building the trainer and fit()."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.common import collect, lightning_available, lightning_pytorch, log, now, quiet, rotated

BATCH = 32
LR = 1e-3

METHODS = ["vanilla", "ember", "ember + self.log", "Lightning", "Lightning + self.log"]
NOTES = {
    "vanilla": "for x, y in loader: zero_grad(); loss = cross_entropy(model(x), y); backward(); step()",
    "ember": "ember.Trainer(max_epochs=1, enable_checkpointing=False, default_root_dir=tmp) "
             "(progress bar and CSVLogger on, by default); training_step returns the loss",
    "ember + self.log": "as ember, and training_step also calls self.log('train_loss', loss)",
    "Lightning": "lightning.pytorch (or pytorch_lightning).Trainer(max_epochs=1, enable_checkpointing=False, "
                 "enable_model_summary=False, accelerator='cpu', devices=1, default_root_dir=tmp) "
                 "(default logger and TQDM progress bar on); training_step returns the loss",
    "Lightning + self.log": "as Lightning, and training_step also calls self.log('train_loss', loss)",
}


@dataclass
class LoopResults:
    steps: int
    threads: int = 1
    times: dict[str, list[float]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    lightning_logger: str = ""
    notes: dict[str, str] = field(default_factory=lambda: dict(NOTES))


def make_loader(steps: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * BATCH, 32, generator=g)
    y = torch.randint(0, 2, (steps * BATCH,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))


def run_vanilla(loader: DataLoader, root: Path) -> None:
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    for x, y in loader:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()


def _module(base: type, log_loss: bool):
    """The same MLP module for ember and Lightning: only the base class differs (as for a user)."""

    class MLP(base):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            if log_loss:
                self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    return MLP()


def _ember_module(log_loss: bool):
    import ember

    return _module(ember.Module, log_loss)


def run_ember(loader: DataLoader, root: Path, log_loss: bool = False) -> None:
    import ember

    model = _ember_module(log_loss)
    trainer = ember.Trainer(max_epochs=1, enable_checkpointing=False, default_root_dir=str(root))
    trainer.fit(model, loader)


def _lightning_module(log_loss: bool):
    return _module(lightning_pytorch().LightningModule, log_loss)


def _lightning_trainer(root: Path):
    return lightning_pytorch().Trainer(max_epochs=1, enable_checkpointing=False, enable_model_summary=False,
                      accelerator="cpu", devices=1, default_root_dir=str(root))


def run_lightning(loader: DataLoader, root: Path, log_loss: bool = False) -> None:
    model = _lightning_module(log_loss)
    trainer = _lightning_trainer(root)
    trainer.fit(model, loader)


RUN = {
    "vanilla": run_vanilla,
    "ember": lambda loader, root: run_ember(loader, root, False),
    "ember + self.log": lambda loader, root: run_ember(loader, root, True),
    "Lightning": lambda loader, root: run_lightning(loader, root, False),
    "Lightning + self.log": lambda loader, root: run_lightning(loader, root, True),
}


def run_loop(steps: int, repeats: int, workdir: Path, *, use_lightning: bool = True, threads: int = 1) -> LoopResults:
    """``threads``: torch intra-op threads for every variant. 1 by default: this tiny model gains nothing
    from more, and on a shared 2-core machine OpenMP spin-waiting for a busy core made steps 20x slower
    at random, drowning the framework overhead this benchmark is after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_loop(steps, repeats, workdir, use_lightning, threads)
    finally:
        torch.set_num_threads(saved)


def _run_loop(steps: int, repeats: int, workdir: Path, use_lightning: bool, threads: int) -> LoopResults:
    out = LoopResults(steps=steps, threads=threads)
    if not lightning_available(use_lightning):
        for m in ("Lightning", "Lightning + self.log"):
            out.missing[m] = "not installed" if use_lightning else "disabled (--no-lightning)"
    else:
        with quiet():
            t = _lightning_trainer(workdir / "probe")
        out.lightning_logger = type(t.logger).__name__ if t.logger is not None else "none"
    loader = make_loader(steps)
    workdir.mkdir(parents=True, exist_ok=True)
    with quiet():  # warm-up: imports, first-call costs, allocator
        for m in METHODS:
            if m not in out.missing:
                with tempfile.TemporaryDirectory(dir=workdir) as root:
                    try:
                        RUN[m](make_loader(10), Path(root))
                    except Exception as e:  # noqa: BLE001
                        out.missing[m] = f"failed: {type(e).__name__}: {e}"
    for m, why in out.missing.items():
        if why.startswith("failed"):
            log(f"loop: {m} FAILED in warm-up: {why}")
    log(f"loop: {steps} steps, batch {BATCH}, {repeats} repeat(s)")
    for r in range(repeats):
        for m in rotated(METHODS, r):
            if m in out.missing:
                continue
            with tempfile.TemporaryDirectory(dir=workdir) as root:
                collect()
                try:
                    with quiet():
                        t0 = now()
                        RUN[m](loader, Path(root))
                        dt = now() - t0
                except Exception as e:  # noqa: BLE001
                    out.missing[m] = f"failed: {type(e).__name__}: {e}"
                    log(f"  {m} FAILED: {out.missing[m]}")
                    continue
            out.times.setdefault(m, []).append(dt)
            log(f"  r{r} {m:22s} {dt:8.3f} s")
    return out
