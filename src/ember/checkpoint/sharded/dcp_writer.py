"""``ShardWriter``: DCP's StorageWriter for ember folders. Each rank writes one ember file with its
chunks (CRC-32C over every byte) and fsyncs it; rank 0, once every rank has written (DCP gathers the
write results first), checks that every rank's file is there with the size its rank wrote, then
writes ``metadata.json`` last, fsynced with the folder: its presence is the commit. Only tensors are
written: a BYTE_IO item (a non-tensor value given to DCP) is refused.

The check matters across machines: ranks on another node write into the folder *as that node sees
it*. Where the nodes do not share the filesystem, rank 0 finds another rank's file missing and the
save fails on every rank, naming the file, instead of committing a folder that lacks it.

With ``store=(storage, name)`` (a folder at a URL, ``objects.py``) each rank writes its file into its
own local ``folder`` first, then uploads it as ``name/rank-NNNNN.safetensors`` (S3: a multipart
upload, which appears whole on completion or not at all), and rank 0 writes ``name/metadata.json``
into the store last, after checking every rank's object."""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from torch.futures import Future
from pathlib import Path
from typing import Any

from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItemType
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult

from ember.checkpoint.sharded import metadata as _meta
from ember.checkpoint.sharded.layout import METADATA, chunk_key, rank_file  # noqa: F401 (chunk_key re-exported)
from ember.checkpoint.sharded.rankfile import write_rank_file
from ember.checkpoint.storage.contract import Storage
from ember.checkpoint.storage.local import fsync_dir
from ember.errors import CheckpointError

COPY_BUFFER = 8 << 20  # bytes per read when a staged rank file is uploaded


def _refuse_bytes(plan: SavePlan) -> None:
    for item in plan.items:
        if item.type == WriteItemType.BYTE_IO:
            raise CheckpointError(
                f"{item.index.fqn!r} is not a tensor: ember's sharded writer stores only tensors (plain or "
                "DTensor) through DCP, never torch.save bytes; put non-tensor values in the state given to "
                "save_sharded, which stores them as JSON")


class ShardWriter(StorageWriter):
    """Writes into ``folder`` (a fresh temporary folder the caller publishes). ``tree`` is the JSON state
    tree rank 0 puts in the metadata."""

    def __init__(self, folder: str | os.PathLike, tree: Any = None, *,
                 store: tuple[Storage, str] | None = None) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.tree = tree
        self.store = store
        self.rank, self.world_size, self.is_coordinator = 0, 1, True
        self.metadata: _meta.ShardedMeta | None = None
        self.save_id = ""  # made by the coordinator's global plan, given to every rank with its file name

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id is not None:
            self.folder = Path(checkpoint_id)

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.is_coordinator = is_coordinator
        self.rank = int(kwargs.get("rank", 0))

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=str(self.folder))

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        _refuse_bytes(plan)
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        self.world_size = len(plans)
        self.save_id = uuid.uuid4().hex  # binds every rank file of this save to its metadata
        return [dataclasses.replace(p, storage_data=(rank_file(i), self.save_id)) for i, p in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        _refuse_bytes(plan)
        fut: Future = Future()
        if not plan.items:
            fut.set_result([])
            return fut
        name, save_id = plan.storage_data
        chunks, keys = {}, []
        for item in plan.items:
            key = chunk_key(item.index.fqn, item.index.offset or ())
            chunks[key] = planner.resolve_data(item)
            keys.append(key)
        size, digest = write_rank_file(self.folder / name, self.rank, chunks, save_id)
        if self.store is not None:
            _upload(self.folder / name, *self._object(name))
        fut.set_result([WriteResult(index=item.index, size_in_bytes=int(chunks[k].numel() * chunks[k].element_size()),
                                    storage_data=(name, k, size, digest)) for item, k in zip(plan.items, keys)])
        return fut

    def _object(self, file: str) -> tuple[Storage, str]:
        assert self.store is not None
        storage, name = self.store
        return storage, f"{name}/{file}"

    def _where(self) -> str:
        return self.store[0].describe(self.store[1]) if self.store is not None else str(self.folder)

    def _size_of(self, file: str) -> int | None:
        """The size of ``file`` as this rank (rank 0) sees it; None when it is not there."""
        try:
            if self.store is not None:
                storage, name = self._object(file)
                return storage.stat(name).size
            return (self.folder / file).stat().st_size
        except (FileNotFoundError, IsADirectoryError):
            return None

    def _check_every_rank_file(self, results: list[list[WriteResult]]) -> None:
        """Every file a rank reported written is there, with the size it wrote (see the module docstring)."""
        written: dict[str, int] = {}
        for per_rank in results:
            for r in per_rank:
                file, _, size, _ = r.storage_data
                written[file] = int(size)
        for file, size in sorted(written.items()):
            seen = self._size_of(file)
            if seen == size:
                continue
            state = "is missing" if seen is None else f"is {seen} bytes, not the {size} its rank wrote"
            raise CheckpointError(
                f"cannot commit the sharded checkpoint {self._where()}: {file} {state} as rank 0 sees it, so the "
                "ranks do not see the same folder. On several machines (nodes), checkpoints must go to a folder "
                "every node mounts (a shared filesystem: NFS, Lustre, ...) or to an object store URL (s3://...); "
                "set ModelCheckpoint(dirpath=...) or default_root_dir to one. Nothing was committed.")

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        self._check_every_rank_file(results)
        meta = _meta.from_dcp(metadata, results, max(self.world_size, len(results)), self.tree, self.save_id)
        raw = _meta.encode(meta)
        if self.store is not None:
            storage, name = self._object(METADATA)
            with storage.open_write(name) as f:  # one PUT: the object appears whole, last
                f.write(raw)
            self.metadata = meta
            return
        with open(self.folder / METADATA, "xb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.folder)  # every rank file's name and the metadata's, before the folder is published
        self.metadata = meta

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return "://" not in os.fspath(checkpoint_id)


def _upload(path: Path, storage: Storage, name: str) -> None:
    """Upload the local file ``path`` as ``name`` (through the store's commit: S3 multipart), then
    remove the local copy."""
    try:
        with open(path, "rb") as src, storage.open_write(name) as dst:
            shutil.copyfileobj(src, dst, COPY_BUFFER)
    finally:
        path.unlink(missing_ok=True)
