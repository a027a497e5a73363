"""``ShardWriter``: DCP's StorageWriter for ember folders. Each rank writes one ember file with its
chunks (CRC-32C over every byte) and fsyncs it; rank 0, once every rank has written (DCP gathers the
write results first), writes ``metadata.json`` last, fsynced with the folder: its presence is the
commit. Only tensors are written: a BYTE_IO item (a non-tensor value given to DCP) is refused."""

from __future__ import annotations

import dataclasses
import os
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
from ember.checkpoint.storage.local import fsync_dir
from ember.errors import CheckpointError


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

    def __init__(self, folder: str | os.PathLike, tree: Any = None) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.tree = tree
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
        fut.set_result([WriteResult(index=item.index, size_in_bytes=int(chunks[k].numel() * chunks[k].element_size()),
                                    storage_data=(name, k, size, digest)) for item, k in zip(plan.items, keys)])
        return fut

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        meta = _meta.from_dcp(metadata, results, max(self.world_size, len(results)), self.tree, self.save_id)
        raw = _meta.encode(meta)
        with open(self.folder / METADATA, "xb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.folder)  # every rank file's name and the metadata's, before the folder is published
        self.metadata = meta

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return "://" not in os.fspath(checkpoint_id)
