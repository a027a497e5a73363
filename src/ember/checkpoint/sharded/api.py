"""``save_sharded`` and ``load_sharded``: collective saves and loads of a sharded checkpoint folder
through torch.distributed.checkpoint's planner, with ember's writer and reader (no pickle on disk)."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner

from ember.checkpoint.sharded import commit, layout, objects
from ember.checkpoint.sharded import metadata as _meta
from ember.checkpoint.sharded.layout import local_folder
from ember.checkpoint.sharded.dcp_reader import ShardReader
from ember.checkpoint.sharded.split import join, split
from ember.checkpoint.sharded.dcp_writer import ShardWriter
from ember.errors import CheckpointError, CheckpointMismatchError


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


AT_FIRST_COLLECTIVE = layout.AT_FIRST_COLLECTIVE  # the hooks run before a save's or load's first collective


def _leave_cleanly() -> None:
    if _distributed():
        for hook in AT_FIRST_COLLECTIVE:
            hook()


def _from_rank0(value: str | None, group: dist.ProcessGroup | None = None) -> str:
    if not _distributed():
        assert value is not None
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


@contextlib.contextmanager
def _dcp_errors() -> Iterator[None]:
    """DCP wraps every rank's error in a CheckpointException; an ember error raised on a rank (damage,
    a refused value) comes out as itself, and DCP's warning that it runs without a process group is
    silenced (that is what a plain process means; only there: the warnings filters are process-wide,
    and a save may run on a background thread)."""
    try:
        with contextlib.nullcontext() if _distributed() else warnings.catch_warnings():
            if not _distributed():
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            yield
    except dcp.CheckpointException as e:
        for failure in e.failures.values():  # (exception, traceback) per failed rank
            inner = failure[0] if isinstance(failure, tuple) and failure else failure
            if isinstance(inner, CheckpointError):
                raise inner from None
        raise


def _prepare(target: Path) -> tuple[Path | None, str | None]:
    try:
        return commit.new_temp_folder(target), None
    except (OSError, CheckpointError) as e:
        return None, f"cannot save a sharded checkpoint at {target}: {e}"


def save_sharded(state: dict, location: str | os.PathLike, *, storage_options: dict | None = None,
                 process_group: dist.ProcessGroup | None = None) -> None:
    """Save ``state`` as the sharded checkpoint folder ``location``; every rank of the default process
    group calls it (a plain process without torch.distributed writes one rank's file).
    ``process_group``: another group of every rank to run the save's collectives on (a save on a
    background thread must not interleave its collectives with training's on the default group).

    Tensors (plain ones, written once by DCP's deduplication, and DTensors, each rank writing its
    shards) go through DCP into one ember file per rank; every other value goes into rank 0's JSON
    metadata, written last. The folder is written under a temporary name and swapped in only once
    complete: an existing checkpoint at ``location`` stays intact until then.
    """
    tree, tensors = split(state)  # an unstorable value fails here, on every rank, before any write
    _leave_cleanly()
    if objects.is_url(location):  # an object store: committed by the order of writes (objects.py)
        def save(writer: ShardWriter) -> None:
            with _dcp_errors():
                dcp.save(tensors, storage_writer=writer, planner=DefaultSavePlanner(flatten_state_dict=False),
                         no_dist=not _distributed(), process_group=process_group)

        objects.save_to_store(tensors, tree, os.fspath(location), storage_options=storage_options,
                              process_group=process_group, save=save)
        return
    target = local_folder(location, storage_options)
    tmp, error = _prepare(target) if _rank() == 0 else (None, None)
    name = _from_rank0(f"!{error}" if error else str(tmp), process_group)
    if name.startswith("!"):
        raise CheckpointError(name[1:])
    folder = Path(name)
    try:
        if _rank() != 0:
            folder.mkdir(parents=True, exist_ok=True)  # a no-op where the ranks share rank 0's filesystem
        with _dcp_errors():
            dcp.save(tensors, storage_writer=ShardWriter(folder, tree),
                     planner=DefaultSavePlanner(flatten_state_dict=False), no_dist=not _distributed(),
                     process_group=process_group)
    except BaseException:
        if _rank() == 0:
            commit.remove(folder)
        raise
    published = None
    if _rank() == 0:
        try:
            commit.publish(folder, target)
        except CheckpointError as e:
            commit.remove(folder)
            published = f"!{e}"
    outcome = _from_rank0(published or "ok", process_group)  # every rank returns once it is at its name
    if outcome.startswith("!"):
        raise CheckpointError(outcome[1:])


def _targets(meta: _meta.ShardedMeta, tensors: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    missing = sorted(set(tensors) - set(meta.tensors))
    if missing:
        raise CheckpointMismatchError(
            f"{where} has no tensor {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} that the state "
            f"holds ({len(missing)} missing); load into a state of the same structure as the one saved")
    for fqn, t in tensors.items():
        saved = meta.tensors[fqn]
        if tuple(t.shape) != saved.size:
            raise CheckpointMismatchError(f"{fqn}: the checkpoint's tensor is {list(saved.size)}, the state's is "
                                          f"{list(t.shape)} ({where}); build the model as it was saved")
    out = dict(tensors)
    for fqn, saved in meta.tensors.items():
        if fqn not in out:  # saved but not in the state: loaded whole, on the CPU
            out[fqn] = torch.empty(saved.size, dtype=saved.dtype)
    return out


def load_sharded(state: dict, location: str | os.PathLike, *, storage_options: dict | None = None) -> dict:
    """Fill the tensors and DTensors of ``state`` in place from the sharded folder ``location`` (saved
    on any number of ranks; each rank reads the pieces its shards need) and return the whole checkpoint
    dict: every value as saved, with the state's own (now loaded) tensor objects in their places and
    whole CPU tensors for the ones the state did not hold. Collective like ``save_sharded``."""
    _leave_cleanly()
    with objects.local(location, storage_options) as staged:  # a URL: each rank reads a local copy
        folder = local_folder(staged, None if staged is not location else storage_options)
        meta = _meta.read(folder)
        _, tensors = split(state)
        targets = _targets(meta, tensors, folder)
        with _dcp_errors():
            dcp.load(targets, storage_reader=ShardReader(folder, meta),
                     planner=DefaultLoadPlanner(flatten_state_dict=False), no_dist=not _distributed())
    return join(meta.tree, targets)


