"""``ShardReader``: DCP's StorageReader for ember folders. The metadata comes from ``metadata.json``
(checked before DCP sees it); each rank maps only the rank files holding chunks it needs, verifies
each chunk's CRC-32C before copying from it, and copies it into the destination (resharding is DCP's
planner's work: it hands each rank the overlaps of stored chunks and its own shards)."""

from __future__ import annotations

import os
from torch.futures import Future
from pathlib import Path
from typing import Any

from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.storage import StorageReader

from ember.checkpoint.sharded import metadata as _meta
from ember.checkpoint.sharded.rankfile import RankFile
from ember.errors import CheckpointError


def _narrow(t: Any, offsets: Any, lengths: Any) -> Any:
    for dim, (o, n) in enumerate(zip(offsets, lengths)):
        t = t.narrow(dim, o, n)
    return t


class ShardReader(StorageReader):
    """Reads the folder ``folder`` whose checked metadata is ``meta`` (read from the folder when None)."""

    def __init__(self, folder: str | os.PathLike, meta: _meta.ShardedMeta | None = None) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.meta = meta
        self._dcp: Metadata | None = None

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id is not None and Path(checkpoint_id) != self.folder:
            self.folder, self.meta, self._dcp = Path(checkpoint_id), None, None

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if self.meta is None:
            self.meta = _meta.read(self.folder)
        if self._dcp is None:
            self._dcp = self.meta.to_dcp()
        return self._dcp

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self._dcp = metadata

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        assert self.meta is not None and self._dcp is not None
        per_file: dict[str, list[tuple[ReadItem, str]]] = {}
        for item in plan.items:
            if item.type == LoadItemType.BYTE_IO:
                raise CheckpointError(f"{item.storage_index.fqn!r}: ember's sharded reader loads tensors only")
            file, key = self._dcp.storage_data[item.storage_index]
            per_file.setdefault(file, []).append((item, key))
        for file, items in sorted(per_file.items()):
            rf = RankFile(self.folder, file, self.meta)
            source = target = None
            try:
                rf.verify([key for _, key in items])  # all this rank needs from the file, in parallel
                for item, key in items:
                    t = self.meta.tensors[item.storage_index.fqn]
                    chunk = next(c for c in t.chunks if c.key == key and c.file == file)
                    source = _narrow(rf.tensor(key, t.dtype, chunk.sizes), item.storage_offsets, item.lengths)
                    target = planner.resolve_tensor(item).detach()
                    if target.size() != source.size():
                        raise CheckpointError(f"{item.dest_index.fqn!r}: the destination piece is "
                                              f"{list(target.size())},"
                                              f" the stored piece {list(source.size())}")
                    target.copy_(source)
                    planner.commit_tensor(item, target)
            finally:
                source = target = None  # drop views of the map before closing it
                rf.close()
        fut: Future = Future()
        fut.set_result(None)
        return fut

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return "://" not in os.fspath(checkpoint_id)
