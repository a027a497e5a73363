"""Custom samplers under DDP/FSDP, as Lightning handles them: ``ShardedSampler`` yields, rank by rank and
epoch by epoch, exactly what Lightning's ``DistributedSamplerWrapper`` yields (no process group needed);
on 2 gloo ranks (tests/distributed/jobs/custom_samplers.py) a user sampler and a user batch sampler train
on disjoint shares."""

from __future__ import annotations

import json

import jobrunner
import pytest
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from ember.distributed.samplers import ShardedSampler, UnevenShardedSampler


class Reverse(Sampler):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(self.n - 1, -1, -1))

    def __len__(self) -> int:
        return self.n


class EpochSeeded(Sampler):
    """A seeded sampler that draws a new order each epoch (``set_epoch``)."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(11 + self.epoch)).tolist())

    def __len__(self) -> int:
        return self.n


SAMPLERS = {
    "reverse": lambda: Reverse(11),
    "weighted": lambda: WeightedRandomSampler(torch.arange(1.0, 12.0), 9, generator=torch.Generator().manual_seed(3)),
    "epoch-seeded": lambda: EpochSeeded(11),
}


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_sharded_sampler_yields_what_lightnings_wrapper_yields(make, shuffle):
    connector = pytest.importorskip("pytorch_lightning.trainer.connectors.data_connector")
    for rank in (0, 1):
        ours = ShardedSampler(make(), num_replicas=2, rank=rank, shuffle=shuffle, seed=7)
        theirs = connector.DistributedSamplerWrapper(make(), num_replicas=2, rank=rank, shuffle=shuffle, seed=7)
        for epoch in (0, 1):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_unpadded_sharded_sampler_yields_what_lightnings_predict_wrapper_yields(make):
    """Prediction never shuffles a custom sampler (Lightning shuffles only a RandomSampler's loader)."""
    connector = pytest.importorskip("pytorch_lightning.trainer.connectors.data_connector")
    for rank in (0, 1):
        ours = UnevenShardedSampler(make(), num_replicas=2, rank=rank, shuffle=False, seed=7)
        theirs = connector.UnrepeatedDistributedSamplerWrapper(make(), num_replicas=2, rank=rank, shuffle=False)
        for epoch in (0, 1):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)  # Lightning's does not forward it: the same only while the sampler ignores it
            if isinstance(ours.sampler, EpochSeeded):
                theirs.dataset._sampler.set_epoch(epoch)
            assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom_samplers")
    r = jobrunner.run("launcher", "custom_samplers.py", str(root), timeout=240)
    assert r.returncode == 0, r.output
    return [json.loads((root / f"rank{i}.json").read_text()) for i in (0, 1)]


def _ids(run: dict) -> list[int]:
    return [i for batch in run["seen"] for i in batch]


def test_a_user_sampler_trains_each_rank_on_its_own_share(ranks):
    """Lightning shuffles training shards: the reversed order, permuted by seed_everything's seed."""
    r0, r1 = (r["reverse"] for r in ranks)
    assert sorted(_ids(r0) + _ids(r1)) == list(range(16))
    for rank, r in enumerate((r0, r1)):
        assert _ids(r) == list(ShardedSampler(Reverse(16), num_replicas=2, rank=rank, shuffle=True, seed=0))


def test_a_user_batch_sampler_is_made_again_around_each_ranks_share(ranks):
    r0, r1 = (r["batch_sampler"] for r in ranks)
    assert sorted(_ids(r0) + _ids(r1)) == list(range(16))
    for rank, r in enumerate((r0, r1)):
        share = list(torch.utils.data.DistributedSampler(range(16), num_replicas=2, rank=rank, seed=0))
        assert r["seen"] == [share[4:], share[:4]]  # LastFirst: its batches last first

