"""Run a job script of tests/distributed/jobs as real processes: under torchrun, through ember's
launcher (a plain ``python job.py --launch N``), or as N processes given torchrun's variables by hand
(no agent in between): fresh interpreters (``start_by_hand``) or forks of a warm server (``run("fork", ...)``,
tests/forkstart.py: ~2.5 s of imports saved per rank, for the tests whose subject is not how the ranks
start). Every run has a timeout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import forkstart

JOBS = Path(__file__).parent / "jobs"
TIMEOUT = 60  # seconds; the jobs take 5-10 s on 2 cores
JOB_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
            "NODE_RANK", "TORCHELASTIC_RESTART_COUNT", "EMBER_LAUNCHER_PID")


@dataclass
class Result:
    returncode: int
    output: str
    seconds: float


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in JOB_VARS}
    env["OMP_NUM_THREADS"] = "1"  # as torchrun sets it; two processes share two cores
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(how: str, job: str, *args: str, nproc: int = 2, timeout: float = TIMEOUT, relative: bool = False) -> Result:
    """``how``: "torchrun", "launcher" or "fork" (the ranks forked with torchrun's variables, no agent:
    a failing rank does not end the others, so failure tests use the other two). ``relative``: run
    from the jobs folder, naming the script by a relative path (the job may change directory before
    it launches)."""
    script = job if relative else str(JOBS / job)
    if how == "fork":
        return _run_forked(script, args, nproc, timeout, JOBS if relative else Path.cwd())
    if how == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               script, *args]
    elif how == "launcher":
        cmd = [sys.executable, script, *args, "--launch", str(nproc)]
    else:
        raise ValueError(how)
    start = time.monotonic()
    p = subprocess.run(cmd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, cwd=JOBS if relative else None)
    return Result(p.returncode, p.stdout, time.monotonic() - start)


def _run_forked(script: str, args: tuple, nproc: int, timeout: float, cwd: Path) -> Result:
    """Every rank's output, rank by rank; the exit code: 0, or the first failing rank's."""
    start, port = time.monotonic(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"rank{r}.out" for r in range(nproc)]
        if nproc == 1:  # one plain process, as ``python job.py --launch 1`` is
            procs = [forkstart.popen([script, *args, "--launch", "1"], env=clean_env(), cwd=cwd, stdout=outs[0],
                                     stderr=forkstart.STDOUT)]
        else:
            procs = [forkstart.popen([script, *args], cwd=cwd, stdout=outs[r], stderr=forkstart.STDOUT, env=dict(
                clean_env(), RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))) for r in range(nproc)]
        late = []
        for p in procs:
            try:
                p.wait(max(0.0, timeout - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                late.append(p)
        for p in late:
            p.kill()
            p.wait()
        output = "".join(o.read_text() for o in outs)
    if late:
        raise subprocess.TimeoutExpired([script, *args], timeout, output=output)
    code = next((p.returncode for p in procs if p.returncode != 0), 0)
    return Result(code, output, time.monotonic() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_by_hand(job: str, *args: str, nproc: int = 2) -> list[subprocess.Popen]:
    """``nproc`` processes with torchrun's variables set by hand; the caller waits (with a timeout)."""
    port = free_port()
    procs = []
    for rank in range(nproc):
        env = dict(clean_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                   LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(JOBS / job), *args], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs
