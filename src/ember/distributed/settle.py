"""Waiting, at exit, until gloo's worker threads have let go of every finished collective.

Why (the abort this prevents, "terminate called without an active exception", SIGABRT at the exit of
a job that succeeded): each gloo group runs worker threads (``pt_gloo_runloop``) that execute its
collectives. A worker releases a finished collective, and the tensors it used, only after the caller
has been told it is done. If Python has freed those tensors meanwhile, releasing them needs the GIL;
once the interpreter is finalizing, a thread that asks for the GIL is ended by Python inside a C++
destructor, and C++ aborts the process. ``destroy_process_group`` does not stop the workers (a group
lives on while anything refers to it, and DDP and FSDP keep theirs alive to the end of the process).

So the exit handler, before finalization, lets go of the GIL and polls the workers' state (Linux:
``/proc/self/task/*/syscall``) until every worker sits in its idle wait (a futex wait on a condition
variable, which a worker enters only after releasing its last collective) on two polls in a row, with
the GIL free in between (a worker waiting for the GIL gets it then). Bounded by ``timeout``: a worker
stuck in a collective whose peer is gone is not waited for. Elsewhere (no /proc): a short sleep.
"""

from __future__ import annotations

import os
import platform
import time

WORKER = "pt_gloo_runloop"
_FUTEX = {"x86_64": "202", "amd64": "202", "aarch64": "98", "arm64": "98"}.get(platform.machine().lower())
_COND_WAIT_OPS = {"0x189", "0x80", "0x89", "0x109"}  # FUTEX_WAIT(_BITSET)_PRIVATE [| CLOCK_REALTIME]
POLL = 0.01


def _worker_states() -> list[str] | None:
    """The state of every gloo worker thread ("idle", "busy"), or None where it cannot be read."""
    if _FUTEX is None:
        return None
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    states = []
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() != WORKER:
                    continue
            with open(f"/proc/self/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue  # the thread ended, or the file is not readable here
        if not fields or not fields[0].isdigit():
            return None
        idle = fields[0] == _FUTEX and len(fields) > 2 and fields[2] in _COND_WAIT_OPS
        states.append("idle" if idle else "busy")
    return states


def settle_gloo_workers(timeout: float = 2.0) -> bool:
    """Wait (the GIL released) until every gloo worker thread is idle; see the module docstring.
    Returns whether they were seen idle (False: timed out, or the state cannot be read here)."""
    if _worker_states() is None:
        time.sleep(min(timeout, 0.05))
        return False
    deadline = time.monotonic() + timeout
    idle_polls = 0
    while time.monotonic() < deadline:
        time.sleep(POLL)
        states = _worker_states()
        if states is None:
            return False
        idle_polls = idle_polls + 1 if all(s == "idle" for s in states) else 0
        if idle_polls >= 2:
            return True
    return False
