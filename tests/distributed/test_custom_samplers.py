"""Custom samplers under DDP/FSDP, as Lightning handles them: ``ShardedSampler`` yields, rank by rank and
epoch by epoch, exactly what Lightning's ``DistributedSamplerWrapper`` yields (no process group needed);
on 2 gloo ranks (tests/distributed/jobs/custom_samplers.py) a user sampler and a user batch sampler train
on disjoint shares, and a run over a seeded WeightedRandomSampler resumed mid-epoch matches one that
never stopped; the prediction writer's batch indices of a wrapped sampler are the batches it yields."""

from __future__ import annotations

import json

import jobrunner
import pytest
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from ember.distributed.samplers import ShardedSampler, UnevenShardedSampler
from jobs.custom_samplers import Reverse  # the job's own user sampler


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


def test_resumed_mid_epoch_over_a_seeded_weighted_sampler_matches_the_uninterrupted_run(ranks):
    """The wrapped sampler's generator is part of the epoch's recorded start: epoch 1 draws what the
    uninterrupted run drew there, not epoch 0's numbers again."""
    for r in ranks:
        full, stopped, resumed = r["full"], r["stopped"], r["resumed"]
        assert len(full["seen"]) == 6 and full["seen"][:4] == stopped["seen"]
        assert resumed["seen"] == full["seen"][4:]
        assert resumed["weights"] == full["weights"]
    assert ranks[0]["full"]["seen"][:3] != ranks[0]["full"]["seen"][3:]  # each epoch its own draw


def test_prediction_writer_indices_of_a_wrapped_sampler_are_the_batches_it_yields():
    """BasePredictionWriter reads the batch indices ahead: it puts the wrapped sampler's generator back."""
    from ember.callbacks.prediction_writer import _batch_indices

    weighted = WeightedRandomSampler(torch.ones(8), 8, generator=torch.Generator().manual_seed(3))
    sampler = UnevenShardedSampler(weighted, num_replicas=2, rank=0, shuffle=False, seed=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(8)), batch_size=2, sampler=sampler)
    assert _batch_indices(loader) == [b[0].tolist() for b in loader]
