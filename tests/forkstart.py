"""Start a test's Python program as a fork of a warm server instead of a fresh interpreter.

A fresh interpreter spends ~2.5 s of CPU importing torch and ember on this project's 2-core machines; the
suite starts hundreds. ``popen(argv, ...)`` forks the program from multiprocessing's forkserver, which has
torch, ember and pytest imported, and runs it as ``python *argv`` would (``["-m", "pytest", ...]``,
``["script.py", ...]`` or ``["-c", code, ...]``) with exactly ``env`` as its environment, in ``cwd``. It
returns a ``subprocess.Popen`` look-alike: the process is real (its own pid, its own session with
``start_new_session``, killable by any signal), its stdout/stderr go to a pipe, a file or /dev/null, and
``returncode`` is its exit code or minus the signal that ended it.

Not for what a test checks about how processes start (torchrun, ember's launcher, a fresh interpreter's
imports): those tests start them as users do. The server is started once per test process (xdist worker)
on first use; a program run this way shares the server's already-imported modules, not the test's state."""

from __future__ import annotations

import atexit
import io
import multiprocessing
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing import reduction
from pathlib import Path
from typing import IO, Any, Sequence

PRELOAD = ["torch", "ember", "pytest"]
PIPE, STDOUT, DEVNULL = subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL
_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


class _Fd:
    """A file descriptor handed to the forked child (duplicated into it when the process is started)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self):
        return _detach, (reduction.DupFd(self.fd),)


def _detach(dup) -> int:
    return dup.detach()


class Forked:
    """What ``popen`` returns: the parts of ``subprocess.Popen`` the tests use."""

    def __init__(self, process, stdout: IO | None, stderr: IO | None, args: list[str]) -> None:
        self._process, self.stdout, self.stderr, self.args = process, stdout, stderr, args
        self.pid: int = process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, timeout: float | None = None) -> tuple[Any, Any]:
        """Everything left on the pipes, then the exit (``TimeoutExpired`` past ``timeout``)."""
        got: dict[str, Any] = {}
        readers = [threading.Thread(target=lambda k=k, f=f: got.__setitem__(k, f.read()), daemon=True)
                   for k, f in (("out", self.stdout), ("err", self.stderr)) if f is not None]
        for t in readers:
            t.start()
        for t in readers:
            t.join(timeout)
        self.wait(timeout)
        return got.get("out"), got.get("err")


def _target(spec: Any, ends: list[int]) -> tuple[Any, list[int]]:
    """(what the child gets for one stream, the parent's ends to close after the start)."""
    if spec is None or spec == STDOUT:
        return spec, []
    if spec == DEVNULL:
        return "devnull", []
    if spec == PIPE:
        r, w = os.pipe()
        ends.append(r)
        return _Fd(w), [w]
    return str(spec), []  # a path: appended to


def popen(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
          stdout: Any = None, stderr: Any = None, text: bool = True, start_new_session: bool = False,
          path: Sequence[str] = ()) -> Forked:
    """``python *argv`` forked from the warm server. ``stdout``/``stderr``: PIPE, DEVNULL, a file path
    (appended to), None (the server's own streams) or, for stderr, STDOUT; ``path`` goes first on the
    program's sys.path, as PYTHONPATH would put it."""
    reads: list[int] = []
    out, close_out = _target(stdout, reads)
    err, close_err = _target(stderr, reads)
    env = dict(os.environ if env is None else env)
    p = _forkserver().Process(target=_run, name=" ".join(argv)[:60], args=(
        list(argv), env, str(cwd or os.getcwd()), out, err, start_new_session, list(path)))
    p.start()
    for fd in close_out + close_err:
        os.close(fd)
    files = iter(os.fdopen(r, "r" if text else "rb") for r in reads)
    return Forked(p, next(files) if stdout == PIPE else None, next(files) if stderr == PIPE else None, list(argv))


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run([sys.executable, *argv], capture_output=True, text=True)``, forked from the warm server
    (``TimeoutExpired`` past ``timeout``, the program killed)."""
    p = popen(argv, env=env, cwd=cwd, stdout=PIPE, stderr=PIPE)
    try:
        out, err = p.communicate(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise
    return subprocess.CompletedProcess(list(argv), p.returncode, out, err)


def _redirect(target: Any, fd: int) -> None:
    if target is None:
        return
    if target == STDOUT:
        os.dup2(1, fd)
        return
    if isinstance(target, int):
        new = target
    elif target == "devnull":
        new = os.open(os.devnull, os.O_WRONLY)
    else:
        new = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(new, fd)
    os.close(new)


def _fresh_streams(unbuffered: bool) -> None:
    """sys.stdout/stderr over the new fds 1 and 2, buffered as a fresh interpreter's would be."""
    def stream(fd: int, line: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        binary = raw if unbuffered else io.BufferedWriter(raw)
        return io.TextIOWrapper(binary, encoding="utf-8", errors="backslashreplace" if fd == 2 else "strict",
                                line_buffering=line, write_through=unbuffered)

    sys.stdout, sys.stderr = stream(1, False), stream(2, True)
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr


def _run(argv: list[str], env: dict[str, str], cwd: str, out: Any, err: Any, new_session: bool,
         path: list[str]) -> None:
    if new_session:
        os.setsid()
    _redirect(out, 1)
    _redirect(err, 2)
    os.environ.clear()
    os.environ.update(env)
    _fresh_streams(bool(env.get("PYTHONUNBUFFERED")))
    os.chdir(cwd)
    sys.path[:0] = path
    multiprocessing.set_start_method(None, force=True)  # the interpreter's default again, not "forkserver"
    import torch

    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", torch.get_num_threads())))  # read at import elsewhere
    sys.orig_argv = [sys.executable, *argv]  # what the interpreter was started with, as ember's launcher reads it
    code: object = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c":
            sys.argv = ["-c", *argv[2:]]
            sys.path.insert(0, "")
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code
    finally:
        atexit._run_exitfuncs()  # as an interpreter's exit does (ember's launcher waits there for its ranks)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def free_port() -> int:
    """A TCP port free on loopback now (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
