"""Every rank's loop position in rank 0's single-file checkpoint, and each rank's own back on resume.

Under DDP the weights, optimizers and progress are the same on every rank; what differs is each
rank's random state and data position (its sampler shard, its loader's generator). Rank 0 writes the
checkpoint, so those are gathered to it:

    rng                      rank 0's random states (where a single-process checkpoint has them)
    loops.fit.data           rank 0's data position (likewise)
    loops.fit.ranks          [{"rng": ..., "data": ...} for rank 0, 1, ..., N-1]

A reader that knows nothing of ranks (one process, ember 0.1) sees a complete single-process
checkpoint: rank 0's. On resume every rank reads the same file and takes ``ranks[its rank]``.

Saved on N ranks, resumed on M != N: at an epoch's end the next epoch starts as it would on M ranks
(ranks below N take their own random state, the others rank 0's). Part-way through an epoch the
shards no longer match what was trained, so the epoch restarts from its first batch (with a warning):
its batches already trained are trained again, and the run is no longer bit-identical to one that
never stopped.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch.distributed as dist

from ember.errors import CheckpointMismatchError

PER_RANK_KEYS = ("rng", "data")
"""The loop-state entries that differ between ranks. ``accumulated_grads`` does not under DDP as
ember runs it (gradients are all-reduced at every backward); add it here if accumulation ever uses
``no_sync()``."""
RANKS = "ranks"


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized()


def gather(state: Mapping[str, Any], keys: tuple[str, ...] = PER_RANK_KEYS) -> dict[str, Any] | None:
    """Collective: call on every rank with its loop state (``FitLoop.state_dict()``).

    Returns, on rank 0, ``state`` plus ``ranks``: every rank's ``keys`` entries, in rank order; on
    the other ranks None. Without a joined process group, ``state`` unchanged (a single process).
    """
    if not _joined():
        return dict(state)
    mine = {k: state[k] for k in keys if k in state}
    rank, world = dist.get_rank(), dist.get_world_size()
    out: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(mine, out, dst=0)  # pickled between the job's own processes; files never hold pickles
    if rank != 0:
        return None
    return {**state, RANKS: out}


def scatter(saved: Mapping[str, Any], path: Any = "the checkpoint") -> dict[str, Any]:
    """This rank's loop state from what ``gather`` saved (the checkpoint's loop state, as
    ``checkpoint.state.loop_state`` reads it). Needs no communication: every rank reads the file."""
    out = {k: v for k, v in saved.items() if k != RANKS}
    ranks = saved.get(RANKS)
    rank = dist.get_rank() if _joined() else 0
    world = dist.get_world_size() if _joined() else 1
    if ranks is None:
        saved_on = 1  # a single-process checkpoint: its entries are rank 0's
    else:
        _check_ranks(ranks, path)
        saved_on = len(ranks)
        if rank < saved_on:
            out.update(ranks[rank])
    if saved_on == world:
        return out
    mid_epoch = not saved.get("epoch_done", True) and saved.get("batch", 0) > 0
    if mid_epoch:
        if rank == 0:
            warnings.warn(
                f"{path} was saved on {saved_on} rank(s) part-way through epoch {saved.get('epoch')} (after batch "
                f"{saved.get('batch')}), and this job has {world}: the data shards differ, so epoch "
                f"{saved.get('epoch')} restarts from its first batch and its batches already trained are trained "
                f"again. Resume on {saved_on} rank(s) for an exact continuation.", UserWarning, stacklevel=2)
        out["batch"] = 0
        out["accumulated_grads"] = None
    return out


def _check_ranks(ranks: Any, path: Any) -> None:
    if not isinstance(ranks, list) or not ranks or not all(isinstance(r, Mapping) for r in ranks):
        raise CheckpointMismatchError(
            f"{path}: loops['fit']['ranks'] must be a non-empty list of per-rank dicts; found "
            f"{type(ranks).__name__}. The file was not written by ember's DDP checkpointing.")
    for i, r in enumerate(ranks):
        unknown = set(r) - set(PER_RANK_KEYS) - {"accumulated_grads"}
        if unknown:
            raise CheckpointMismatchError(
                f"{path}: loops['fit']['ranks'][{i}] has entries {sorted(unknown)}; expected only "
                f"{list(PER_RANK_KEYS)}. The file was written by a newer ember or is damaged.")
