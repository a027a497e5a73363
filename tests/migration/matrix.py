"""The strategy matrix (its tests: test_strategy_matrix_ddp.py and test_strategy_matrix_fsdp.py, one file per strategy
so that pytest-xdist's --dist loadfile gives them to different workers): every program-shaped test module in
tests/migration (``test_mig_*.py``, a new one joins by being there) runs again on 2 gloo ranks under
``strategy="ddp"`` and ``strategy="fsdp"``, started like torchrun's workers (each rank forked from a warm server
with the job's variables: tests/forkstart.py): one pytest run per module and strategy (matrix_plugin.py forces the
strategy on every Trainer and records each fit on each rank). Each must pass on both ranks, every checkpoint its
ModelCheckpoint names must exist, the metrics (all logged with ``sync_dist=True`` under the matrix) must be equal
on every rank, and a fresh model must resume from the earliest checkpoint and train on to the program's limits,
equally on every rank.

A module opts out with ``MATRIX_SKIP = "reason"`` at its top level (read here without importing it), or out of some
strategies with ``MATRIX_SKIP = {"fsdp": "reason"}``."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

import forkstart

HERE = Path(__file__).parent
MODULES = sorted(p.name for p in HERE.glob("test_mig_*.py"))
JOB_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
            "NODE_RANK", "TORCHELASTIC_RESTART_COUNT", "EMBER_LAUNCHER_PID")


def _skip_reason(module: str, strategy: str) -> str | None:
    for node in ast.parse((HERE / module).read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MATRIX_SKIP" for t in node.targets):
            reason = ast.literal_eval(node.value)
            return reason.get(strategy) if isinstance(reason, dict) else reason
    return None


def run_matrix(module: str, strategy: str, out: Path) -> list[str]:
    """Both ranks of one module's run, forked from a warm server with torchrun's variables (forkstart.py:
    ~2.5 s of imports saved per rank); returns a failure's description per rank that failed."""
    env = {k: v for k, v in os.environ.items() if k not in JOB_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", EMBER_MATRIX_STRATEGY=strategy, EMBER_MATRIX_OUT=str(out),
               PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(forkstart.free_port()), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    argv = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "matrix_plugin", "-W", "ignore",
            str(HERE / module)]
    ranks = [forkstart.popen(argv, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), cwd=HERE.parent.parent,
                             stdout=out / f"rank{r}.out", stderr=forkstart.STDOUT, path=[str(HERE)]) for r in (0, 1)]
    failed = []
    for r, p in enumerate(ranks):
        try:
            p.wait(600)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.returncode != 0:
            failed.append(f"rank {r} exited with {p.returncode}:\n" + (out / f"rank{r}.out").read_text()[-6000:])
    return failed


def check(module: str, strategy: str, tmp_path: Path) -> None:
    """The matrix's test of one module under one strategy (see the module's docstring)."""
    reason = _skip_reason(module, strategy)
    if reason:
        pytest.skip(reason)
    failed = run_matrix(module, strategy, tmp_path)
    assert not failed, "\n".join(failed)
    ranks = [[json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert [t["test"] for t in ranks[0]] == [t["test"] for t in ranks[1]]
    fits = [(t["test"], f0, f1) for t, u in zip(*ranks) for f0, f1 in zip(t["fits"], u["fits"], strict=True)]
    assert fits, f"{module} fit nothing under the matrix"
    for test, f0, f1 in fits:
        assert f0["metrics"] == f1["metrics"], test  # synced values: equal on every rank
        assert (f0["global_step"], f0["checkpoints"]) == (f1["global_step"], f1["checkpoints"]), test
        assert all(f0["checkpoints_exist"]), (test, f0["checkpoints"])
        resume = f0.get("resume", {})
        if "global_step" in resume:
            assert resume["global_step"] >= resume["saved_step"], (test, resume)
            assert resume == f1["resume"], test
