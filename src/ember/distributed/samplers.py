"""How a job of many processes splits a loader: which loaders are already split, whether one shuffles, its
shuffle seed, and the unpadded sampler prediction uses under DDP."""

from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from ember import compat


class UnevenSampler(DistributedSampler):
    """A DistributedSampler without padding: rank r of N takes samples r, r+N, r+2N, ... once each, so
    ranks may get one sample (and batch) fewer. For prediction under DDP, where every sample must be
    predicted exactly once and nothing waits for the other ranks."""

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[:len(self)])

    def __len__(self) -> int:
        n = len(self.dataset)  # type: ignore[arg-type]
        return len(range(self.rank, n, self.num_replicas))  # DistributedSampler's padding comes last


def has_distributed_sampler(loader: DataLoader) -> bool:
    return isinstance(loader.sampler, DistributedSampler) or isinstance(
        getattr(loader.batch_sampler, "sampler", None), DistributedSampler)


def shuffles(loader: DataLoader) -> bool | None:
    """True for a loader made with shuffle=True, False for shuffle=False, None for anything custom."""
    if loader.batch_sampler is not None and type(loader.batch_sampler) is not BatchSampler:
        return None
    sampler = loader.sampler
    if type(sampler) is SequentialSampler:
        return False
    if type(sampler) is RandomSampler and not sampler.replacement and sampler._num_samples is None:
        return True
    return None


def seed_of(loader: DataLoader) -> int:
    """The shuffle seed: the loader's (or its sampler's) generator's, else seed_everything's, else 0."""
    for gen in (loader.generator, getattr(loader.sampler, "generator", None)):
        if isinstance(gen, torch.Generator):
            return int(gen.initial_seed()) % 2**63
    env = os.environ.get(compat.GLOBAL_SEED_ENV, "")
    return int(env) if env.lstrip("-").isdigit() else 0
