"""Saves of a run whose state is sharded across ranks (FSDP): every rank writes its shards into one
checkpoint folder (``ember.checkpoint.sharded``), with the interface of the single-file writer.

The Trainer's managers call ``save(state, (store, name), ..., then=...)`` on every rank (``collective``
says so); the folder is committed when ``save_sharded`` returns on every rank, and ``then`` (linking
``last``, deleting what the keep policies dropped) runs after that on every rank (the manager acts on
the files only on the rank that manages them).

``blocking=False`` (the managers' background saves): each rank copies its local shards to host memory
(pinned for CUDA) before ``save`` returns, so training may change the live ones at once; a thread then
writes the copy, running the save's collectives on a process group of its own (gloo), never on the
one training uses. At most one save is in flight: the next ``save`` or ``wait`` waits for it and
raises its error.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist

from ember.checkpoint.storage.locations import Storage
from ember.distributed import group
from ember.distributed.failure import reported_here


class ShardedWriter:
    """Writes checkpoint folders from every rank, in the foreground or on a thread."""

    collective = True

    def __init__(self, storage_options: dict | None = None, timeout: float | None = None) -> None:
        self.storage_options, self.timeout = storage_options, timeout
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._group: Any = None

    def save(self, state: dict, target: tuple[Storage, str], *, blocking: bool = True, deferred: bool = False,
             then: Callable[[], Any] | None = None) -> None:
        from ember.checkpoint.sharded import save_sharded  # deferred: imports torch.distributed.checkpoint

        self.wait()
        store, name = target
        location = store.describe(name)
        if blocking or not (dist.is_available() and dist.is_initialized()):
            save_sharded(state, location, storage_options=self.storage_options)
            if then is not None:
                then()
            return
        snapshot = host_copy(state)
        group = self._checkpoint_group()

        def write() -> None:
            try:
                save_sharded(snapshot, location, storage_options=self.storage_options, process_group=group)
                if then is not None:
                    then()
            except BaseException as e:  # noqa: BLE001 - raised by the next save or wait
                self._error = e

        self._thread = threading.Thread(target=write, name="ember-sharded-save", daemon=True)
        self._thread.start()

    def _checkpoint_group(self):
        """A gloo group of every rank for the background saves' collectives (made once, on every rank at
        the same save: new_group is itself a collective)."""
        if self._group is None:
            kwargs = {} if self.timeout is None else {"timeout": _timedelta(self.timeout)}
            self._group = dist.new_group(backend="gloo", **kwargs)
            group.on_leave(self._leave)
        return self._group

    def _leave(self) -> None:
        """At exit: the save in flight finishes (its collectives run on this writer's group), then the
        group is let go of, so that it can be destroyed with its worker threads (group.py). After a
        failure (this rank's or a peer's) nothing is waited for: the peers may be gone."""
        watch = group.watch()
        failed = reported_here() or (watch is not None and watch.peer_failure() is not None)
        try:
            if not failed:
                self.wait()
        finally:
            self._group = None

    def wait(self) -> None:
        """Wait for the save in flight; raise its error if it failed."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def snapshot_barrier(self) -> None:
        return None  # the host copy is made before save() returns

    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def host_copy(tree: Any) -> Any:
    """``tree`` with every container rebuilt and every tensor copied to host memory: local shards of
    DTensors stay DTensors (same mesh, placements, global shape); CUDA data goes to pinned memory."""
    copied = _copy(tree)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # the non-blocking copies into pinned memory are done
    return copied


def _copy(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        # deferred: torch.distributed may be unavailable in a build; needed only for sharded state
        from torch.distributed.tensor import DTensor

        if isinstance(v, DTensor):
            return DTensor.from_local(_to_host(v.to_local()), v.device_mesh, v.placements, run_check=False,
                                      shape=v.shape, stride=v.stride())
        return _to_host(v)
    if isinstance(v, dict):
        out = {k: _copy(x) for k, x in v.items()}
        return out if type(v) is dict else type(v)(out)
    if isinstance(v, list):
        return [_copy(x) for x in v]
    if isinstance(v, tuple) and not hasattr(v, "_fields"):
        return tuple(_copy(x) for x in v)
    return v


def _to_host(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.device.type == "cuda":
        out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        out.copy_(t, non_blocking=True)
        return out
    return t.clone()


def _timedelta(seconds: float):
    return timedelta(seconds=seconds)
