"""Manual stress: the exit race of gloo's worker threads, with and without ember's exit handler.

A 4-rank torchrun job that ends right after two collectives on tensors Python then frees: a gloo
worker thread may still hold the finished collective when the interpreter finalizes, ask for the GIL
to free the tensors, be ended by Python inside a C++ destructor, and abort the process ("terminate
called without an active exception"). ``plain`` is torch alone; ``ember`` registers ember's exit
handler (``ember.distributed.group.leave_at_exit``, what ``init``/``save_sharded``/``load_sharded``
register), which settles the workers before finalization (docs/DISTRIBUTED.md, "A clean exit").

usage: python -m bench.exit_race [--runs 20] [--nproc 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BODY = """
import torch, torch.distributed as dist
dist.init_process_group("gloo")
{handler}
out = [torch.empty(1) for _ in range(dist.get_world_size())]
dist.all_gather(out, torch.tensor([float(dist.get_rank())]))
y = torch.ones(3)
dist.all_reduce(y)
"""
HANDLER = "from ember.distributed.group import leave_at_exit\nleave_at_exit()"


def count(script: Path, runs: int, nproc: int) -> int:
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    bad = 0
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                            str(nproc), str(script)], env=env, capture_output=True, text=True, timeout=300)
        output = p.stdout + p.stderr
        if p.returncode != 0 or "terminate called" in output:
            bad += 1
            why = [line for line in output.splitlines() if "terminate called" in line or "Error" in line][:2]
            print(f"  exit {p.returncode}: {why}", flush=True)
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--nproc", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, handler in (("plain", ""), ("ember", HANDLER)):
            script = Path(tmp) / f"race_{name}.py"  # not ember.py: it would shadow the package
            script.write_text(BODY.format(handler=handler))
            print(f"{name}: {count(script, args.runs, args.nproc)} of {args.runs} runs aborted", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
