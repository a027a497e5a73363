"""Synchronous and background saves, with at most one save in flight.

A background save holds the state of one moment. The loop pauses while the state is split into
JSON and tensors; tensors not ``deferred`` are copied into reused host buffers (pinned for CUDA
tensors) at once. ``deferred`` tensors are copied by the writer thread, and ``snapshot_barrier()``
waits for (and helps with) that copy: the Trainer calls it before any user code runs (every hook,
``training_step``, validation) and before the optimizer step, so the copy overlaps only the loop's
own work and data loading, and an in-place edit by user code, through ``.data`` or not, can never
reach the snapshot. As a second line, each deferred tensor's version counter is checked after the
copy. Then the thread encodes, checksums, writes and commits through the target's store.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Callable, Mapping, Union

import torch

from ember.checkpoint.format import codec, container
from ember.checkpoint.transfer_bars import WriteProgress
from ember.checkpoint.storage.locations import Storage, resolve
from ember.errors import CheckpointError

Target = Union[str, os.PathLike, "tuple[Storage, str]"]  # a path or URL, or (store, name)


def _store_and_name(target: Target) -> tuple[Storage, str]:
    return target if isinstance(target, tuple) else resolve(target)


def write_file(target: Target, tree: dict, tensors: Mapping[str, torch.Tensor], *, progress: bool = False) -> str:
    """Encode and commit one checkpoint file; ``progress`` shows a bar if it takes over 2 s.
    Returns where it was written."""
    store, name = _store_and_name(target)
    with store.open_write(name) as f:  # a store fsyncs what it commits: synced=True
        if not progress:
            container.write(f, tree, tensors, synced=True)
        else:
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            bar = WriteProgress(f, total, f"saving {name}")
            try:
                container.write(bar, tree, tensors, synced=True)
            finally:
                bar.close()
    return store.describe(name)


class _Snapshot:
    """Host copies of tensors, in buffers kept from one save to the next."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def buffer_for(self, name: str, t: torch.Tensor) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
            pin = t.device.type == "cuda"
            buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=pin)
            self._buffers[name] = buf
        return buf

    def copy(self, names, tensors: Mapping[str, torch.Tensor], out: dict[str, torch.Tensor],
             sync: bool = True) -> None:
        cuda = False
        for name in names:
            t = tensors[name]
            buf = self.buffer_for(name, t)
            buf.copy_(t.detach(), non_blocking=t.device.type == "cuda")
            cuda = cuda or t.device.type == "cuda"
            out[name] = buf
        if cuda and sync:
            torch.cuda.synchronize()

    def keep_only(self, names) -> None:
        self._buffers = {k: v for k, v in self._buffers.items() if k in names}


class _CopyJob:
    """The deferred copies of one save, shared out tensor by tensor: the writer thread takes them from
    the front, and a training thread that reaches the optimizer step early helps from the back."""

    def __init__(self, snapshot: _Snapshot, live: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> None:
        self._snapshot, self._live, self._out = snapshot, live, out
        self._todo = collections.deque(live)
        self._lock = threading.Lock()
        self._busy = 0
        self.done = threading.Event()
        self.error: BaseException | None = None
        if not self._todo:
            self.done.set()

    def work(self, from_front: bool) -> None:
        while True:
            with self._lock:
                if not self._todo:
                    return
                name = self._todo.popleft() if from_front else self._todo.pop()
                self._busy += 1
            try:
                self._snapshot.copy([name], self._live, self._out, sync=False)
            except BaseException as e:  # noqa: BLE001 - reported by the writer thread
                self.error = e
            finally:
                with self._lock:
                    self._busy -= 1
                    if not self._todo and not self._busy:
                        self.done.set()


class CheckpointWriter:
    """Owns the background save. ``save`` (blocking or not), ``wait`` and ``snapshot_barrier``."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._copied = threading.Event()
        self._copied.set()
        self._job: _CopyJob | None = None
        self._error: BaseException | None = None
        self._snapshot = _Snapshot()

    # ---------------------------------------------------------------- public
    def save(self, state: dict, target: Target, *, blocking: bool = True,
             deferred: set[int] | bool = False, then: Callable[[], None] | None = None) -> None:
        """Save ``state`` to ``target`` (a path or URL, or ``(store, name)``). ``then`` runs once the
        file is committed. ``deferred``: the tensors the writer thread copies later (True: all; or the
        storage data pointers of some); the caller must call ``snapshot_barrier()`` before changing them."""
        tree, tensors = codec.flatten(state)  # an unstorable value fails here, before any byte is written
        target = _store_and_name(target)
        self.wait()
        if blocking:
            write_file(target, tree, tensors, progress=True)
            if then is not None:
                then()
            return
        late = [n for n, t in tensors.items()
                if t.numel() and (deferred is True or (deferred and t.untyped_storage().data_ptr() in deferred))]
        late_set = set(late)
        now = [n for n in tensors if n not in late_set]
        snap: dict[str, torch.Tensor] = {}
        self._snapshot.copy(now, tensors, snap)
        versions = {n: tensors[n]._version for n in late}
        self._snapshot.keep_only(tensors.keys())
        live = {n: tensors[n] for n in late}
        self._job = _CopyJob(self._snapshot, live, snap)
        self._copied.clear()
        self._thread = threading.Thread(target=self._run, name="ember-checkpoint-writer", daemon=True,
                                        args=(target, tree, tensors.keys(), snap, live, versions, then))
        self._thread.start()

    def snapshot_barrier(self) -> None:
        """Block until the in-flight save has copied what it defers (call before mutating parameters).
        While it waits, the calling thread copies too."""
        if not self._copied.is_set():
            job = self._job
            if job is not None:
                job.work(from_front=False)
            self._copied.wait()

    def wait(self) -> None:
        """Block until no save is in flight; raise the error of a failed background save."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @property
    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---------------------------------------------------------------- the writer thread
    def _run(self, target: tuple[Storage, str], tree: dict, names, snap: dict, live: dict, versions: dict,
             then: Callable[[], None] | None) -> None:
        store, name = target
        where = store.describe(name)
        try:
            job = self._job
            try:
                job.work(from_front=True)
                job.done.wait()
                if job.error is not None:
                    raise job.error
                if any(t.device.type == "cuda" for t in live.values()):
                    torch.cuda.synchronize()
                changed = [n for n, t in live.items() if t._version != versions[n]]
            finally:
                self._copied.set()
            if changed:
                raise CheckpointError(
                    f"checkpoint {where} was not written: {', '.join(changed[:5])} changed in place while the "
                    "background save was copying it, without waiting for snapshot_barrier() (another thread?). "
                    "Save synchronously (ModelCheckpoint(async_save=False), save_checkpoint(blocking=True)) if "
                    "tensors are changed from other threads during training."
                )
            write_file((store, name), tree, {n: snap[n] for n in names})
            if then is not None:
                then()
        except BaseException as e:  # noqa: BLE001 - surfaced by wait()
            if isinstance(e, CheckpointError) or not isinstance(e, Exception):
                self._error = e
            else:
                err = CheckpointError(f"background save of {where} failed: {e}")
                err.__cause__ = e
                self._error = err
