"""How a job of many processes splits a loader: which loaders are already split, whether one shuffles, its
shuffle seed, the unpadded sampler prediction uses under DDP, and the wrapper that shards a custom sampler."""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from ember import compat
from ember.errors import SamplerError


class UnevenSampler(DistributedSampler):
    """A DistributedSampler without padding: rank r of N takes samples r, r+N, r+2N, ... once each, so
    ranks may get one sample (and batch) fewer. For prediction under DDP, where every sample must be
    predicted exactly once and nothing waits for the other ranks."""

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[:len(self)])

    def __len__(self) -> int:
        n = len(self.dataset)  # type: ignore[arg-type]
        return len(range(self.rank, n, self.num_replicas))  # DistributedSampler's padding comes last


class ShardedSampler(DistributedSampler):
    """This rank's share of what a custom sampler yields, as Lightning's ``DistributedSamplerWrapper``:
    each epoch the sampler's indices are drawn into a list when iteration starts, and a DistributedSampler
    over the positions in that list (shuffled by ``seed`` + epoch when ``shuffle``, padded with repeats
    at the end) picks this rank's. ``set_epoch`` reaches the wrapped sampler too.

    Args:
        sampler: the custom sampler (it needs a finite ``__len__``).
        num_replicas: ranks in the job.
        rank: this rank.
        shuffle: permute the drawn list each epoch (Lightning does for training).
        seed: the permutation's seed (plus the epoch).
    """

    def __init__(self, sampler: Sampler, *, num_replicas: int, rank: int, shuffle: bool, seed: int) -> None:
        self.sampler = sampler
        super().__init__(range(len(sampler)), num_replicas=num_replicas, rank=rank,  # type: ignore[arg-type]
                         shuffle=shuffle, seed=seed, drop_last=False)

    def __iter__(self) -> Iterator[Any]:
        drawn = list(self.sampler)  # drawn now, not lazily: its randomness is the epoch's first
        return iter([drawn[i] for i in super().__iter__()])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch here and on the wrapped sampler when it has ``set_epoch``.

        Args:
            epoch: the epoch about to start.
        """
        super().set_epoch(epoch)
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)


class UnevenShardedSampler(UnevenSampler, ShardedSampler):
    """``ShardedSampler`` without padding (prediction under DDP), as Lightning's
    ``UnrepeatedDistributedSamplerWrapper``."""


def has_distributed_sampler(loader: DataLoader) -> bool:
    return isinstance(loader.sampler, DistributedSampler) or isinstance(
        getattr(loader.batch_sampler, "sampler", None), DistributedSampler)


def shuffles(loader: DataLoader) -> bool:
    """Whether an evaluation loader keeps shuffling, as Lightning decides: its sampler (its batch
    sampler's, where it has one) is a RandomSampler."""
    batch_sampler = loader.batch_sampler
    sampler = loader.sampler if batch_sampler is None else getattr(batch_sampler, "sampler", batch_sampler)
    return isinstance(sampler, RandomSampler)


def seed_of(loader: DataLoader) -> int:
    """The shuffle seed: the loader's (or its RandomSampler's) generator's, else seed_everything's, else 0."""
    sampler = loader.sampler if isinstance(loader.sampler, RandomSampler) else None
    for gen in (loader.generator, getattr(sampler, "generator", None)):
        if isinstance(gen, torch.Generator):
            return int(gen.initial_seed()) % 2**63
    env = os.environ.get(compat.GLOBAL_SEED_ENV, "")
    return int(env) if env.lstrip("-").isdigit() else 0


def shard_sampler(loader: DataLoader, what: str, *, uneven: bool, **kwargs: Any) -> DistributedSampler:
    """This rank's sampler, chosen as Lightning chooses it: a DistributedSampler over the dataset in
    place of a RandomSampler or SequentialSampler (a loader with a batch sampler has a SequentialSampler),
    a ``ShardedSampler`` around any other sampler; the unpadded variants when ``uneven``. ``kwargs``:
    num_replicas, rank, shuffle, seed."""
    sampler = loader.sampler
    if isinstance(sampler, (RandomSampler, SequentialSampler)):
        return (UnevenSampler if uneven else DistributedSampler)(loader.dataset, drop_last=False, **kwargs)
    length = getattr(sampler, "__len__", None)
    length = length() if callable(length) else None
    if not isinstance(length, int):  # none, or float("inf")
        raise SamplerError(
            f"the {what} loader's sampler (type {type(sampler).__name__}) has no finite length, so ember cannot shard "
            "what it yields across ranks. Expected a sampler whose __len__ returns the number of indices it yields; "
            f"received one whose len() is {length!r}. Give it a finite __len__, or pass "
            "Trainer(use_distributed_sampler=False) and have it yield only this rank's indices.")
    return (UnevenShardedSampler if uneven else ShardedSampler)(sampler, **kwargs)


def rebatch(batch_sampler: Any, sampler: DistributedSampler, what: str, *, predict: bool) -> Any:
    """A custom batch sampler's class made again around ``sampler``, as Lightning does for one it did not
    see being made: ``type(batch_sampler)(sampler, batch_size=..., drop_last=...)`` with its own batch
    size and ``drop_last`` (False when predicting). None (with a warning) when predicting with one that
    has no ``batch_size``/``drop_last``: Lightning leaves that one as it is."""
    cls = type(batch_sampler)
    name = cls.__qualname__
    if not (hasattr(batch_sampler, "batch_size") and hasattr(batch_sampler, "drop_last")):
        if predict:
            warnings.warn(f"the {what} loader's batch sampler (type {name}) has no batch_size and drop_last, so ember "
                          "leaves it as it is: every rank predicts the batches it yields.", UserWarning, stacklevel=4)
            return None
        raise SamplerError(
            f"the {what} loader's batch sampler (type {name}) cannot be given the DistributedSampler that shards "
            "the data across ranks. Expected a torch.utils.data.BatchSampler, or a class that is made as one: "
            f"{name}(sampler, batch_size=..., drop_last=...) with batch_size and drop_last attributes; received one "
            "without batch_size and drop_last. Make it follow BatchSampler's API, or pass "
            "Trainer(use_distributed_sampler=False) and have it yield only this rank's batches.")
    drop_last = False if predict else batch_sampler.drop_last
    try:
        inspect.signature(cls).bind(sampler, batch_size=batch_sampler.batch_size, drop_last=drop_last)
    except TypeError as err:
        raise SamplerError(
            f"the {what} loader's batch sampler (type {name}) cannot be given the DistributedSampler that shards "
            f"the data across ranks. Expected its class to be made as {name}(sampler, batch_size=..., drop_last=...), "
            f"as ember (and Lightning) make it again; received {name}{inspect.signature(cls)} ({err}). Give its "
            "__init__ that form (other settings with defaults), or pass Trainer(use_distributed_sampler=False) and "
            "have it yield only this rank's batches.") from err
    return cls(sampler, batch_size=batch_sampler.batch_size, drop_last=drop_last)


def rebuilt(loader: DataLoader, sampler: DistributedSampler, what: str, *, predict: bool) -> DataLoader:
    """``loader`` made again with ``sampler`` (its custom batch sampler made again around it, ``rebatch``),
    keeping its batch size, ``drop_last``, workers, collate function, generator and the rest."""
    if loader.batch_size is None and loader.batch_sampler is not None:
        batch_sampler = rebatch(loader.batch_sampler, sampler, what, predict=predict)
        if batch_sampler is None:
            return loader
        batching: dict[str, Any] = {"batch_sampler": batch_sampler}
    else:
        batching = {"batch_size": loader.batch_size, "sampler": sampler, "drop_last": loader.drop_last}
    return DataLoader(
        loader.dataset, **batching, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
        prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device, in_order=getattr(loader, "in_order", True))
