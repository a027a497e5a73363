"""Start a test's Python program as a fork of a warm server instead of a fresh interpreter.

A fresh interpreter spends ~2.5 s of CPU importing torch and ember on this project's 2-core machines; the
suite starts hundreds. ``start(argv, env=..., cwd=..., out=...)`` forks the program from multiprocessing's
forkserver with torch, ember and pytest already imported, then runs it as ``python *argv`` would
(``["-m", "pytest", ...]`` or ``["script.py", ...]``) with exactly ``env`` as its environment, in ``cwd``,
stdout and stderr appended to ``out``. The process is real: its own pid, killable, its exit code (or the
signal that ended it, negative) in ``exitcode``.

Only for programs whose ranks are started with their variables set by hand (``RANK``, ``WORLD_SIZE``, ...):
what tests torchrun or ember's launcher starts them as they start them, as a fresh interpreter. The server
is started once per test process (xdist worker) on first use."""

from __future__ import annotations

import multiprocessing
import os
import runpy
import socket
import sys
from pathlib import Path
from typing import Sequence

PRELOAD = ["torch", "ember", "pytest"]
_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def start(argv: Sequence[str], *, env: dict[str, str], cwd: str | Path, out: str | Path,
          path: Sequence[str] = ()):
    """A started ``multiprocessing`` process running ``python *argv``; ``path`` goes first on its sys.path
    (as PYTHONPATH would put it). Wait with ``join(timeout)``, read ``exitcode``."""
    p = _forkserver().Process(target=_run, args=(list(argv), dict(env), str(cwd), str(out), list(path)),
                              name=" ".join(argv)[:60])
    p.start()
    return p


def _run(argv: list[str], env: dict[str, str], cwd: str, out: str, path: list[str]) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.path[:0] = path
    import torch

    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", torch.get_num_threads())))  # read at import elsewhere
    code: object = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def free_port() -> int:
    """A TCP port free on loopback now (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
