"""A process exits even when ember's DataLoader workers are still referenced at exit (they ignore
SIGTERM, which is how multiprocessing's exit hook stops leftover workers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    kept = e  # its traceback keeps the epoch's iterator, and so its workers, alive until exit
print("done", flush=True)
"""


def test_a_process_exits_while_a_kept_traceback_holds_an_iterator_with_workers(tmp_path):
    tests = Path(__file__).parent
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(tmp_path))], cwd=tests, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(tests), "PATH": "/usr/bin:/bin"})
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
                          text=True, timeout=60, env={"PYTHONPATH": str(tests), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"
