"""Every storage backend the conformance suite (test_storage_conformance.py) holds to the contract.

To add a backend, append one ``(id, factory)`` pair: ``factory(tmp_path)`` returns an empty store
(it may call ``pytest.importorskip`` or ``pytest.skip`` when what it needs is missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ember.checkpoint.storage.local import LocalStorage, MemoryStorage
from ember.checkpoint.storage.locations import Storage

BACKENDS: list[tuple[str, Callable[[Path], Storage]]] = [
    ("local", lambda tmp_path: LocalStorage(tmp_path / "store")),
    ("memory", lambda tmp_path: MemoryStorage()),
]


def _s3(tmp_path: Path) -> Storage:
    """A fresh bucket on the moto S3 server of tests/s3server.py (skips without moto or s3fs)."""
    from s3server import fresh_bucket_options

    from ember.checkpoint.storage.fsspec import FsspecStorage

    bucket, options = fresh_bucket_options()
    return FsspecStorage(f"{bucket}/store", options)


BACKENDS.append(("s3", _s3))
