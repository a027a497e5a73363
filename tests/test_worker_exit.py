"""A process exits even when ember's DataLoader workers are still referenced at exit (they ignore
SIGTERM, which is how multiprocessing's exit hook stops leftover workers)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ember
from tiny import TinyModel, make_loader, trainer_kwargs

SCRIPT = """
import torch, ember
from torch.utils.data import DataLoader, TensorDataset
from tiny import TinyModel, trainer_kwargs

class Fails(TinyModel):
    def training_step(self, batch, batch_idx):
        if batch_idx == 2:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)

x = torch.randn(64, 4)
loader = DataLoader(TensorDataset(x, (x.sum(1) > 0).long()), batch_size=4, num_workers=2)
try:
    ember.Trainer(max_epochs=1, **trainer_kwargs({root!r})).fit(Fails(), loader)
except RuntimeError as e:
    kept = e  # its traceback keeps the epoch's iterator (the fit ended its workers)
from ember.loops.data import ResumableLoader
left, _ = ResumableLoader(loader).epoch_iterator(0)  # an epoch started outside a fit, left running:
next(left)  # its workers are ended by ember's exit hook, or else by their grace period
print("done", flush=True)
"""


def _env(tests: Path) -> dict:
    """A bare environment, with the tests' folder (and the ember under test) importable."""
    path = os.pathsep.join(p for p in (str(tests), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "PATH": "/usr/bin:/bin"}


def test_a_process_exits_while_a_kept_traceback_holds_an_iterator_with_workers(tmp_path):
    """Without the exit hook this waits WORKER_GRACE_S (60 s): the timeout."""
    tests = Path(__file__).parent
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(tmp_path))], cwd=tests, capture_output=True,
                          text=True, timeout=60, env=_env(tests))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"


def test_a_leftover_worker_told_to_stop_ends_after_the_grace_period(tmp_path):
    """The safety net under the exit hook: even a worker nothing shut down ends once its grace period
    after SIGTERM (multiprocessing's exit hook sends it) has passed, so its parent can exit."""
    script = ("import atexit, ember.loops.data\n"
              "ember.loops.data.WORKER_GRACE_S = 1.0\n"
              "atexit.unregister(ember.loops.data._end_workers)  # as if the exit hook had missed this iterator\n"
              + SCRIPT)
    tests = Path(__file__).parent
    proc = subprocess.run([sys.executable, "-c", script.format(root=str(tmp_path))], cwd=tests, capture_output=True,
                          text=True, timeout=60, env=_env(tests))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"


# In process: ember ends the workers it started when a fit or an evaluation ends, as Lightning does.
# Left to the garbage collector, a loader kept in a reference cycle (a Trainer and its module) is
# collected with its queues already closed: its workers never hear that they should stop, the
# collection waits 10 s for each, and they outlive it by WORKER_GRACE_S (60 s at the suite's exit).

def _new_workers(before: set) -> list:
    return [p for p in multiprocessing.active_children() if p not in before]


def test_fit_ends_the_workers_of_persistent_loaders(tmp_path):
    train = make_loader(n=16, batch_size=4, num_workers=2, persistent_workers=True)
    val = make_loader(n=8, batch_size=4, shuffle=False, num_workers=2, persistent_workers=True)
    before = set(multiprocessing.active_children())
    ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path)).fit(TinyModel(), train, val)
    assert _new_workers(before) == []


def test_validate_ends_the_workers_of_a_persistent_loader(tmp_path):
    loader = make_loader(n=8, batch_size=4, shuffle=False, num_workers=2, persistent_workers=True)
    before = set(multiprocessing.active_children())
    ember.Trainer(**trainer_kwargs(tmp_path)).validate(TinyModel(), loader, verbose=False)
    assert _new_workers(before) == []


class _FailsAtBatch2(TinyModel):
    def training_step(self, batch, batch_idx):
        if batch_idx == 2:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


def test_a_failed_fit_ends_its_epochs_workers_though_the_error_is_kept(tmp_path):
    loader = make_loader(n=32, batch_size=4, num_workers=2)
    before = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="boom") as kept:  # its traceback holds the epoch's iterator
        ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path)).fit(_FailsAtBatch2(), loader)
    assert kept.traceback and _new_workers(before) == []

