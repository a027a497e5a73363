"""Lifetimes of the processes ember's launcher starts.

child-exits DIR    rank 1 exits with code 3 before joining the group; rank 0 tries to join
parent-killed DIR  both join; rank 1 writes DIR/child.pid and sleeps; rank 0 kills itself with SIGKILL

usage: python lifetimes.py MODE DIR [--grace S] --launch 2
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from ember.distributed import DDPStrategy, global_rank, launch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["child-exits", "parent-killed"])
    ap.add_argument("dir")
    ap.add_argument("--grace", type=float, default=30.0)
    ap.add_argument("--launch", type=int, default=2)
    args = ap.parse_args()
    launch(args.launch, grace=args.grace)
    if args.mode == "child-exits" and global_rank() == 1:
        os._exit(3)
    strategy = DDPStrategy(accelerator="cpu", timeout=60, grace=args.grace)
    strategy.setup()
    if args.mode == "parent-killed":
        if global_rank() == 1:
            with open(os.path.join(args.dir, "child.pid.tmp"), "w") as f:
                f.write(str(os.getpid()))
            os.replace(os.path.join(args.dir, "child.pid.tmp"), os.path.join(args.dir, "child.pid"))
        strategy.barrier()
        if global_rank() == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    strategy.teardown()


if __name__ == "__main__":
    main()
