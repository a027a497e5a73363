"""The parity harness: one program, run under real PyTorch Lightning and under ember, and what it did.

``run_both(program, tmp_path, **trainer_kw)`` calls ``program(lib)`` with ``lib`` the
``pytorch_lightning`` module, then ``ember`` (the same source, only the library differs); the program
returns a model (and optionally ``(model, fit_kwargs)``). Each run is seeded alike and fitted with
a recording logger and a recording callback; the ``Run`` it returns holds the hook order, the three
metric dicts, the logged steps and values, the final weights, ``current_epoch``/``global_step`` and
the saved checkpoints' keys and tensors. Tests compare the two ``Run``s field by field."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember

pl = pytest.importorskip("pytorch_lightning")

HOOKS = ("on_fit_start", "on_sanity_check_start", "on_sanity_check_end", "on_train_start", "on_train_epoch_start",
         "on_train_epoch_end", "on_validation_start", "on_validation_end", "on_train_end", "on_fit_end")


@dataclass
class Run:
    hooks: list = field(default_factory=list)            # (hook, sanity_checking, callback_metrics names)
    callback_metrics: dict = field(default_factory=dict)
    logged_metrics: dict = field(default_factory=dict)
    logged: list = field(default_factory=list)           # (step, {name: value}) as the logger received them
    weights: dict = field(default_factory=dict)
    current_epoch: int = -1
    global_step: int = -1
    trainer: Any = None
    model: Any = None


def loader(n: int = 24, batch_size: int = 8, shuffle: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, (x.sum(1) > 0).long()), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(2) if shuffle else None)


def classifier(lib):
    """The usual tiny program: a linear classifier that logs its losses."""

    class Classifier(lib.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Classifier()


def recording_logger(lib, into: list):
    class Recording(lib.loggers.Logger):
        name, version = "rec", 0

        def log_metrics(self, metrics, step=None):
            into.append((step, {k: round(float(v), 5) for k, v in metrics.items()}))

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    return Recording()


def recording_callback(lib, into: list):
    def record(name):
        def hook(self, trainer, module, *args):
            into.append((name, trainer.sanity_checking, sorted(trainer.callback_metrics)))
        return hook

    return type("Recorder", (lib.Callback,), {h: record(h) for h in HOOKS})()


def run(lib, program: Callable, tmp_path, *, fit_kw: dict | None = None, callbacks_extra: list = (),
        **trainer_kw) -> Run:
    out = Run()
    torch.manual_seed(0)
    built = program(lib)
    model, extra_fit = built if isinstance(built, tuple) else (built, {})
    kw = dict(max_epochs=2, logger=recording_logger(lib, out.logged),
              callbacks=[recording_callback(lib, out.hooks), *callbacks_extra],
              enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
              default_root_dir=str(tmp_path / lib.__name__), log_every_n_steps=1)
    if lib is pl:
        kw.update(accelerator="cpu", devices=1)
    kw.update(trainer_kw)
    trainer = lib.Trainer(**kw)
    fit = {"train_dataloaders": loader(), "val_dataloaders": loader(16), **extra_fit, **(fit_kw or {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, **fit)
    out.callback_metrics = {k: round(float(v), 5) for k, v in trainer.callback_metrics.items()}
    out.logged_metrics = {k: round(float(v), 5) for k, v in trainer.logged_metrics.items()}
    out.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out.current_epoch, out.global_step = trainer.current_epoch, trainer.global_step
    out.trainer, out.model = trainer, model
    return out


def run_both(program: Callable, tmp_path, **kw) -> tuple[Run, Run]:
    """(Lightning's run, ember's run) of ``program``."""
    return run(pl, program, tmp_path, **kw), run(ember, program, tmp_path, **kw)


def assert_same_weights(a: Run, b: Run) -> None:
    assert sorted(a.weights) == sorted(b.weights)
    for k in a.weights:
        torch.testing.assert_close(a.weights[k], b.weights[k], atol=1e-6, rtol=1e-5)


def assert_same_run(lightning: Run, ours: Run) -> None:
    """Everything the harness records agrees (hooks, metrics, logged steps and values, weights, counters)."""
    assert ours.hooks == lightning.hooks
    assert ours.logged == lightning.logged
    assert ours.callback_metrics == lightning.callback_metrics
    assert ours.logged_metrics == lightning.logged_metrics
    assert (ours.current_epoch, ours.global_step) == (lightning.current_epoch, lightning.global_step)
    assert_same_weights(lightning, ours)


def checkpoint_files(folder) -> list[str]:
    """The checkpoint files a run left in ``folder`` (names only, sorted)."""
    import os

    return sorted(n for n in os.listdir(folder) if n.endswith(".ckpt")) if os.path.isdir(folder) else []


def checkpoint_contents(path) -> tuple[int, int, dict]:
    """(epoch, global_step, state_dict) of a checkpoint file of either library."""
    try:
        ckpt = ember.load_checkpoint(path)
    except Exception:  # noqa: BLE001 - a Lightning .ckpt is a torch pickle
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["epoch"], ckpt["global_step"], dict(ckpt["state_dict"])


def run_with_checkpoints(program: Callable, tmp_path, checkpoint_kw: dict, **kw) -> tuple[list, list]:
    """Both libraries' runs with ``ModelCheckpoint(dirpath=<own folder>, **checkpoint_kw)``: the file names
    each left, after checking that the files of one name hold the same epoch, step and weights."""
    names = []
    for lib in (pl, ember):
        folder = tmp_path / f"ckpt-{lib.__name__}"
        cb = lib.callbacks.ModelCheckpoint(dirpath=str(folder), **checkpoint_kw)
        run(lib, program, tmp_path, enable_checkpointing=True, callbacks_extra=[cb], **kw)
        names.append(checkpoint_files(folder))
    for name in set(names[0]) & set(names[1]):
        if name.startswith("last"):
            continue  # Lightning's last.ckpt may be written earlier than the end (compared by name only)
        (le, ls, lw), (ee, es, ew) = (checkpoint_contents(tmp_path / f"ckpt-{lib.__name__}" / name)
                                      for lib in (pl, ember))
        assert (ee, es) == (le, ls), name
        assert sorted(ew) == sorted(lw), name
        for k in lw:
            torch.testing.assert_close(ew[k], lw[k], atol=1e-6, rtol=1e-5)
    return names[0], names[1]
