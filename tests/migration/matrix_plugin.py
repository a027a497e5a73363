"""pytest plugin for the strategy matrix (``-p matrix_plugin``): the program-shaped tests of one
tests/migration module run on 2 gloo ranks, every ``ember.Trainer`` they build forced to
``accelerator="cpu", devices=2, strategy=$EMBER_MATRIX_STRATEGY``. Both ranks run this same pytest command
with the job's variables set (``RANK``, ``WORLD_SIZE``, ...: the Trainer joins the job instead of launching
it), so both run the same tests in order.

Every rank reads the whole data (``use_distributed_sampler=False``): each computes the one-process
gradients, and their all-reduced mean ((g + g) / 2) is exactly g, so a program trains, validates,
checkpoints and resumes bit for bit as in one process, and its own assertions (steps, files, values)
hold under the strategy unchanged. Sharded data is checked by tests/distributed/test_user_programs.py
and the parity matrix (tests/distributed/test_parity_matrix.py).

Every number or tensor a module logs is logged with ``sync_dist=True`` (reduced over the ranks, as a
program written for DDP logs its epoch metrics). For every fit it records, per rank, in
``$EMBER_MATRIX_OUT/rank<R>.jsonl``: those metrics, the global step, the checkpoints the run's ModelCheckpoint
wrote, and a resume:
after the test passes, a fresh model of the same class (its saved hyperparameters as arguments) is fit
from the earliest checkpoint to the program's own limits by a fresh Trainer on the same strategy.
``tmp_path`` and ``tmp_path_factory`` give the same folders on both ranks, so that both write into
the same checkpoint folders, as ranks of one job do.

The program's own assertions are checked on rank 0, the rank that logs, prints and writes files as
the one process does; on another rank an AssertionError (about what rank 0 alone does: Lightning's
loggers and progress bar are rank-0-only too) is recorded, not raised, and any other error fails.
A program with manual optimization runs DDP with ``find_unused_parameters=True``, as a Lightning
user passes ``strategy="ddp_find_unused_parameters_true"`` for a GAN.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
from pathlib import Path

import pytest
import torch

import ember
import ember.trainer
from ember.callbacks.finetuning import BaseFinetuning

STRATEGY = os.environ.get("EMBER_MATRIX_STRATEGY", "ddp")
OUT = Path(os.environ.get("EMBER_MATRIX_OUT", "."))
_state: dict = {"test": None, "fits": [], "synced": set()}


def _strategy():
    from ember.distributed import DDPStrategy, FSDPStrategy

    kind = {"ddp": DDPStrategy, "fsdp": FSDPStrategy}[STRATEGY]
    return kind(accelerator="cpu", timeout=120, grace=5)  # a rank stuck on a failed peer ends soon


_Base = ember.trainer.Trainer


class MatrixTrainer(_Base):
    """The program's Trainer on 2 ranks with the matrix's strategy; its fits are recorded."""

    def __init__(self, *args, **kwargs):
        kwargs.update(accelerator="cpu", devices=2, strategy=_strategy(), use_distributed_sampler=False)
        self._matrix_kwargs = dict(kwargs)
        super().__init__(*args, **kwargs)

    def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None):
        if not model.automatic_optimization and hasattr(self.strategy, "ddp_kwargs"):
            # what a Lightning user passes for a GAN-style program: "ddp_find_unused_parameters_true"
            self.strategy.ddp_kwargs["find_unused_parameters"] = True
        out = super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path)
        _record(self, model, (train_dataloaders, val_dataloaders, datamodule), ckpt_path)
        return out


def _record(trainer, model, data, ckpt_path) -> None:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in _state["synced"]}
    ckpts = []
    for cb in trainer.checkpoint_callbacks:
        for p in (cb.best_model_path, getattr(cb, "last_model_path", "")):
            if p and p not in ckpts:
                ckpts.append(p)
    _state["fits"].append({"model": model, "trainer": trainer, "data": data, "resumed": ckpt_path is not None,
                           "entry": {"metrics": metrics, "global_step": trainer.global_step,
                                     "epoch": trainer.current_epoch, "checkpoints": ckpts,
                                     "checkpoints_exist": [os.path.exists(p) for p in ckpts]}})


def _rebuildable(model) -> bool:
    params = list(inspect.signature(type(model).__init__).parameters.values())[1:]
    given = set(model.hparams)
    return all(p.default is not p.empty or p.name in given or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params)


def _resume(fit: dict) -> dict:
    """From the fit's earliest checkpoint, a fresh model and Trainer on the same strategy train on to the
    program's own limits (its schedulers' lengths stay right); callbacks are left out, except a
    ``BaseFinetuning`` (a copy): the param groups it added are in the checkpoint's optimizer state, which
    cannot load without them (in Lightning neither)."""
    model, trainer, (train, val, dm) = fit["model"], fit["trainer"], fit["data"]
    ckpts = [p for p in fit["entry"]["checkpoints"] if os.path.exists(p)]
    if not ckpts:
        return {"skipped": "no checkpoint"}
    if not _rebuildable(model):
        return {"skipped": f"{type(model).__name__} needs arguments it did not save as hyperparameters"}
    path = min(ckpts, key=lambda p: (ember.load_checkpoint(p)["global_step"], p))
    saved = ember.load_checkpoint(path)
    fresh = type(model)(**dict(model.hparams))
    kw = {k: v for k, v in trainer._matrix_kwargs.items() if k != "checkpoint_callback"}
    finetuning = [copy.copy(cb) for cb in trainer.callbacks if isinstance(cb, BaseFinetuning)]
    kw.update(callbacks=finetuning or None, enable_checkpointing=False,  # the program's loggers
              enable_progress_bar=False, default_root_dir=os.path.dirname(path))
    again = MatrixTrainer(**kw)
    again.fit(fresh, train, val, dm, ckpt_path=path)
    _state["fits"].pop()  # the resume itself is not one of the program's fits
    return {"from": os.path.basename(path), "saved_step": saved["global_step"], "global_step": again.global_step}


class _SharedTempFactory:
    """``tmp_path_factory`` with the same folders on every rank (numbered in the order they are made)."""

    def __init__(self) -> None:
        self.made: dict[str, int] = {}

    def getbasetemp(self) -> Path:
        return OUT / "tmp_factory"

    def mktemp(self, basename: str, numbered: bool = True) -> Path:
        n = self.made.get(basename, 0)
        self.made[basename] = n + 1
        path = self.getbasetemp() / (f"{basename}{n}" if numbered else basename)
        path.mkdir(parents=True, exist_ok=True)
        return path


@pytest.fixture(scope="session")
def tmp_path_factory():
    return _SharedTempFactory()


@pytest.fixture
def tmp_path(request):
    """The same folder on every rank, fresh for each test (rank 0 empties it before rank 1 can use it)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
    path = OUT / "tmp" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_configure(config):
    ember.Trainer = ember.trainer.Trainer = MatrixTrainer
    original_log = ember.LightningModule.log

    def log(self, name, value, *args, sync_dist: bool = False, **kwargs):
        if isinstance(value, (int, float, torch.Tensor)):  # metric objects sync themselves
            sync_dist = True  # under the matrix every value is reduced, so every rank must agree on it
            _state["synced"].add(name)
        return original_log(self, name, value, *args, sync_dist=sync_dist, **kwargs)

    ember.LightningModule.log = log


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A test's record starts before its fixtures run (a module fixture's fits belong to its first test)."""
    _state.update(test=item.nodeid, fits=[], synced=set())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    rank = int(os.environ.get("RANK", "0"))
    rank0_only = None
    try:
        result = yield
    except AssertionError as e:  # what only rank 0 does: logs, prints, the files it alone writes
        if rank == 0:
            raise
        result, rank0_only = None, str(e).splitlines()[0][:200]
    entries = []
    for fit in list(_state["fits"]):
        entry = dict(fit["entry"])
        if not fit["resumed"]:
            entry["resume"] = _resume(fit)
        entries.append(entry)
    with open(OUT / f"rank{rank}.jsonl", "a") as f:
        f.write(json.dumps({"test": item.nodeid, "fits": entries, "rank0_only_assertion": rank0_only}) + "\n")
    return result
