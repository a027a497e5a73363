"""Start the other local processes of a job from a plain ``python train.py``, as Lightning does.

``launch(devices)`` in the process the user started: it becomes rank 0 and starts ranks 1..N-1, each
re-running the same command line with the same interpreter and this environment plus the variables
torchrun would set (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``). In those processes (and under torchrun) the
environment already describes the job, so ``launch`` returns at once; every process then calls
``init``.

Lifetimes are tied both ways, with bounded waits:

- a child dies with rank 0 (Linux ``PR_SET_PDEATHSIG``, else a thread watching its parent), even when
  rank 0 is killed with SIGKILL;
- rank 0 watches its children: one that exits non-zero is posted as that rank's failure (so
  ``failure_guard`` names it on every rank), and if rank 0 has not stopped ``grace`` seconds later
  it prints the child's failure and ends with ``EXIT_PEER_FAILED``;
- when rank 0 exits it waits up to ``join_timeout`` seconds for its children (killing them at once
  if rank 0 itself failed) and exits with status 1 if any of them failed.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from ember.checkpoint.storage.temporaries import pid_alive
from ember.distributed import group
from ember.distributed.env import DistributedError, JobEnv
from ember.distributed.failure import EXIT_PEER_FAILED, reported_here

PARENT_ENV = "EMBER_LAUNCHER_PID"  # set in the children: the pid of the rank 0 that started them
POLL = 0.1


@dataclass
class _Child:
    rank: int
    process: subprocess.Popen
    killed_by_us: bool = False

    def failure(self) -> str | None:
        rc = self.process.poll()
        if rc is None or rc == 0 or self.killed_by_us:
            return None
        how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc}"
        return f"the process (pid {self.process.pid}) {how}"


class _Launched:
    """Rank 0's side: the children, their monitor thread and the exit handler."""

    def __init__(self, children: list[_Child], grace: float, join_timeout: float) -> None:
        self.children, self.grace, self.join_timeout = children, grace, join_timeout
        self.failed: list[tuple[int, str]] = []
        self.self_failed = False
        self._lock = threading.Lock()
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook
        atexit.register(self._at_exit)
        threading.Thread(target=self._monitor, name="ember-launcher-monitor", daemon=True).start()

    def _excepthook(self, kind, value, tb) -> None:
        self.self_failed = True
        self._previous_hook(kind, value, tb)

    def _monitor(self) -> None:
        reported: set[int] = set()
        failed_at = None
        while True:
            for child in self.children:
                message = child.failure()
                if message is not None and child.rank not in reported:
                    reported.add(child.rank)
                    with self._lock:
                        self.failed.append((child.rank, message))
                    watch = group.watch()
                    if watch is not None:
                        watch.post_for(child.rank, message)
                    failed_at = failed_at or time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > self.grace:
                rank, message = self.failed[0]
                print(f"ember: rank {rank} failed: {message}. Rank 0 did not stop on its own within {self.grace:g} s, "
                      f"so it ends now (exit code {EXIT_PEER_FAILED}).", file=sys.stderr, flush=True)
                self.kill_children()
                os._exit(EXIT_PEER_FAILED)
            if all(c.process.poll() is not None for c in self.children) and failed_at is None:
                return
            time.sleep(POLL)

    def kill_children(self) -> None:
        for child in self.children:
            if child.process.poll() is None:
                child.killed_by_us = True
                child.process.kill()
        for child in self.children:
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL not delivered
                pass

    def _at_exit(self) -> None:
        if self.self_failed or reported_here():
            self.kill_children()  # rank 0 failed: its peers would only wait for it
        else:
            deadline = time.monotonic() + self.join_timeout
            for child in self.children:
                try:
                    child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            late = [c for c in self.children if c.process.poll() is None]
            if late:
                self.kill_children()
                with self._lock:
                    self.failed.extend((c.rank, f"the process (pid {c.process.pid}) was still running "
                                                f"{self.join_timeout:g} s after rank 0 finished, so it was killed")
                                       for c in late)
        for child in self.children:
            message = child.failure()
            if message is not None and all(r != child.rank for r, _ in self.failed):
                self.failed.append((child.rank, message))
        if self.failed and not self.self_failed:
            for rank, message in self.failed:
                print(f"ember: rank {rank} failed: {message}.", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(1)


_launched: _Launched | None = None


def node_env(num_nodes: int) -> tuple[int, str, int]:
    """(NODE_RANK, MASTER_ADDR, MASTER_PORT) of this machine in a ``num_nodes``-machine job started by
    hand: the same command on every machine, each with its own ``NODE_RANK`` and the address and port
    of node 0 (where rank 0 hosts the job's store)."""
    missing = [k for k in ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DistributedError(
            f"num_nodes={num_nodes} without torchrun needs NODE_RANK, MASTER_ADDR and MASTER_PORT on every node "
            f"({', '.join(missing)} not set): run the same command on each machine with NODE_RANK=0..{num_nodes - 1}, "
            "MASTER_ADDR=<node 0's address> and MASTER_PORT=<a free port there>, or start it with torchrun --nnodes.")
    values = {k: os.environ[k] for k in ("NODE_RANK", "MASTER_PORT")}
    if not all(v.isdigit() for v in values.values()) or not 0 <= int(values["NODE_RANK"]) < num_nodes:
        raise DistributedError(f"NODE_RANK must be an integer in [0, {num_nodes}) and MASTER_PORT a port number; "
                               f"received NODE_RANK={values['NODE_RANK']!r}, MASTER_PORT={values['MASTER_PORT']!r}.")
    return int(values["NODE_RANK"]), os.environ["MASTER_ADDR"], int(values["MASTER_PORT"])


def launch(devices: int, *, num_nodes: int = 1, grace: float = group.DEFAULT_GRACE, join_timeout: float = 60.0) -> None:
    """Make this process the first of a ``devices``-process job on this machine, starting the others.

    Returns in every process with the job's variables set; call ``init(accelerator)`` next. Under
    torchrun, or in a process this function started, it only checks ``devices`` against the job.
    ``num_nodes > 1``: this machine is node ``NODE_RANK`` of a job of ``num_nodes * devices``
    processes whose rank 0 is at ``MASTER_ADDR:MASTER_PORT`` (``node_env``); its processes take ranks
    ``NODE_RANK * devices ...``. ``devices=1`` on one node does nothing.

    Args:
        devices: the number of processes on this machine (an int >= 1, else ``DistributedError``).
        grace: seconds a rank may take to stop after a peer failed.
        join_timeout: seconds the other ranks may keep running after rank 0 finished before they are killed.
    """
    global _launched
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise DistributedError(f"devices must be an int >= 1; received devices={devices!r}.")
    by_hand = num_nodes > 1 and "RANK" not in os.environ  # MASTER_ADDR/PORT are node 0's, not a job yet
    job = None if by_hand else JobEnv.detect()
    if job is not None:
        if job.local_world_size != devices:
            raise DistributedError(
                f"devices={devices}, but the job has {job.local_world_size} processes on this machine "
                f"(LOCAL_WORLD_SIZE={job.local_world_size}). Pass devices={job.local_world_size}, or start torchrun "
                f"with --nproc-per-node {devices}.")
        _tie_to_parent()
        return
    if (devices == 1 and num_nodes == 1) or _launched is not None:
        return
    if threading.current_thread() is not threading.main_thread():
        raise DistributedError("launch() must be called from the main thread: the processes it starts end when the "
                               "thread that started them ends.")
    command = _command()
    node, addr, port = node_env(num_nodes) if num_nodes > 1 else (0, "127.0.0.1", _free_port())
    first = node * devices
    base = dict(os.environ)
    base.update({"WORLD_SIZE": str(devices * num_nodes), "LOCAL_WORLD_SIZE": str(devices), "MASTER_ADDR": addr,
                 "MASTER_PORT": str(port), "NODE_RANK": str(node), "GROUP_RANK": str(node)})
    children = []
    try:
        for local in range(1, devices):
            env = dict(base, RANK=str(first + local), LOCAL_RANK=str(local), **{PARENT_ENV: str(os.getpid())})
            children.append(_Child(first + local, subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)))
    except OSError as e:
        for child in children:
            child.process.kill()
        raise DistributedError(f"could not start the processes of a {devices}-process job with {command}: {e}") from e
    os.environ.update({k: base[k] for k in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                            "NODE_RANK", "GROUP_RANK")})
    os.environ.update({"RANK": str(first), "LOCAL_RANK": "0"})
    _launched = _Launched(children, grace, join_timeout)


def _command() -> list[str]:
    """The command line that started this process, runnable from any working directory."""
    argv = list(getattr(sys, "orig_argv", []))
    main = sys.modules.get("__main__")
    if not argv or not sys.argv or sys.argv[0] in ("", "-"):
        raise DistributedError(
            "this process was started interactively (or from stdin), so ember cannot start the other processes by "
            "re-running its command. Put the code in a script and run `python script.py`, or launch with torchrun.")
    at = len(argv) - len(sys.argv)  # where the script (or `-c` code, or module name) is in the original line
    spec = getattr(main, "__spec__", None)
    script = getattr(main, "__file__", None)
    if sys.argv[0] != "-c" and spec is None and script and 0 < at < len(argv):
        argv[at] = os.path.abspath(script)
    return [sys.executable, *argv[1:]]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tie_to_parent() -> None:
    """In a process ember's launcher started: die when rank 0 dies (Linux: at once, by the kernel)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdigit():
        return
    parent_pid = int(parent)
    if os.getppid() != parent_pid:
        if pid_alive(parent_pid):
            return  # a grandchild that inherited the variable: not ours to tie
        os._exit(EXIT_PEER_FAILED)  # rank 0 is already gone
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # died between the check and prctl
                os._exit(EXIT_PEER_FAILED)
            return
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="ember-parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(EXIT_PEER_FAILED)

