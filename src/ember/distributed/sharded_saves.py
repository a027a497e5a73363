"""Saves of a run whose state is sharded across ranks (FSDP): every rank writes its shards into one
checkpoint folder (``ember.checkpoint.sharded``), with the interface of the single-file writer.

The Trainer's managers call ``save(state, (store, name), ..., then=...)`` on every rank (``collective``
says so); the folder is committed when ``save_sharded`` returns on every rank, and ``then`` (linking
``last``, deleting what the keep policies dropped) runs on the rank that manages the files. Saves are
blocking: the state's tensors are the live shards.
"""

from __future__ import annotations

from typing import Any, Callable

from ember.checkpoint.store import Storage


class ShardedWriter:
    """Writes checkpoint folders from every rank; ``wait`` / ``snapshot_barrier`` have nothing to wait for."""

    collective = True

    def __init__(self, storage_options: dict | None = None) -> None:
        self.storage_options = storage_options

    def save(self, state: dict, target: tuple[Storage, str], *, blocking: bool = True, deferred: bool = False,
             then: Callable[[], Any] | None = None) -> None:
        from ember.checkpoint.sharded import save_sharded

        store, name = target
        save_sharded(state, store.describe(name), storage_options=self.storage_options)
        if then is not None:
            then()

    def wait(self) -> None:
        return None

    def snapshot_barrier(self) -> None:
        return None

    def in_flight(self) -> bool:
        return False
