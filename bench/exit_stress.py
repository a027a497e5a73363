"""Manual stress: back-to-back 2-rank fits (DDP and FSDP, gloo on CPU) and their exit codes.

A finished job must exit 0 on every run: a rank that aborts at interpreter exit ("terminate called
without an active exception", SIGABRT) makes a successful run report failure. This runs
``tests/distributed/jobs/trainer_ddp.py`` (a Lightning-style script: ``Trainer(devices=2,
strategy=...)``, checkpoints every step, ``save_last``) ``--runs`` times, alternating the strategies,
and counts the exit codes. Not part of the test suite (a run takes 10-30 s on 2 busy cores).

usage: python -m bench.exit_stress [--runs 50] [--how launcher|torchrun|both] [--keep DIR]

Exit status 0 only when every run exited 0. Runs that failed keep their output (and, where the
system writes one, the core file) under ``--keep``.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "tests" / "distributed" / "jobs" / "trainer_ddp.py"
JOB_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
            "NODE_RANK", "TORCHELASTIC_RESTART_COUNT", "EMBER_LAUNCHER_PID")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in JOB_VARS}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env


def _allow_cores() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def one_run(how: str, strategy: str, work: Path, timeout: float) -> tuple[int, str]:
    args = [str(work), "--strategy", strategy, "--max-epochs", "1", "--max-steps", "4", "--every-step"]
    if how == "launcher":
        cmd = [sys.executable, str(JOB), *args, "--launch", "2"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(JOB), *args]
    try:
        p = subprocess.run(cmd, env=_env(), cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, preexec_fn=_allow_cores)
        return p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        return -999, f"timed out after {timeout:g} s\n{e.stdout or ''}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50, help="fits in all (strategies alternate)")
    ap.add_argument("--how", choices=("launcher", "torchrun", "both"), default="launcher",
                    help="ember's own launcher (plain python), torchrun, or alternate the two")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds one fit may take")
    ap.add_argument("--keep", default="exit-stress-failures", help="folder for the output of failed runs")
    args = ap.parse_args()
    counts: collections.Counter = collections.Counter()
    failed = 0
    start = time.monotonic()
    for i in range(args.runs):
        strategy = ("ddp", "fsdp")[i % 2]
        how = args.how if args.how != "both" else ("launcher", "torchrun")[(i // 2) % 2]
        work = Path(tempfile.mkdtemp(prefix="ember-exit-"))
        rc, output = one_run(how, strategy, work, args.timeout)
        counts[(how, strategy, rc)] += 1
        aborted = "terminate called" in output
        print(f"run {i + 1:3d}/{args.runs} {how:8s} {strategy:4s} rc={rc}{'  (terminate called)' if aborted else ''}",
              flush=True)
        if rc != 0 or aborted:
            failed += 1
            keep = Path(args.keep) / f"run{i + 1:03d}-{how}-{strategy}"
            keep.mkdir(parents=True, exist_ok=True)
            (keep / "output.txt").write_text(output)
            for core in work.glob("core*"):
                shutil.move(str(core), keep / core.name)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.runs - failed}/{args.runs} runs exited 0 in {time.monotonic() - start:.0f} s")
    for (how, strategy, rc), n in sorted(counts.items()):
        print(f"  {how:8s} {strategy:4s} exit {rc}: {n}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
