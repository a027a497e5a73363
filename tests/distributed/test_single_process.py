"""ember.distributed in one process: environment checks, errors, the loop-state layout across world
sizes, and a real one-process gloo group for what needs a joined group."""

from __future__ import annotations

import warnings
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    SequentialSampler,
    TensorDataset,
    WeightedRandomSampler,
)

import jobrunner
from ember.distributed import DDPStrategy, DistributedError, JobEnv, init, launch, rank_zero_only, world_size
from ember.distributed import group
from ember.checkpoint import ranks
from ember.distributed.failure import FailureBoard
from ember.distributed.samplers import ShardedSampler, UnevenSampler, UnevenShardedSampler
from ember.errors import CheckpointMismatchError, MisconfigurationError, SamplerError

JOB = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
       "MASTER_PORT": "29500"}


@pytest.fixture
def no_job(monkeypatch):
    for k in jobrunner.JOB_VARS:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def solo(monkeypatch, no_job):
    """A real one-process gloo job joined through ember.distributed.init."""
    for k, v in dict(JOB, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                     MASTER_PORT=str(jobrunner.free_port())).items():
        monkeypatch.setenv(k, v)
    strategy = DDPStrategy(accelerator="cpu", timeout=30)
    strategy.setup()
    yield strategy
    strategy.teardown()


# ---------------------------------------------------------------- environment
def test_no_job_variables_means_a_single_process(no_job):
    assert JobEnv.detect() is None and world_size() == 1


def test_torchrun_variables_are_read():
    job = JobEnv.detect(JOB)
    assert (job.rank, job.local_rank, job.world_size, job.local_world_size, job.master_port) == (1, 1, 2, 2, 29500)


def test_some_job_variables_missing_is_an_error_naming_them():
    with pytest.raises(DistributedError, match=r"MASTER_ADDR, MASTER_PORT are not.*torchrun"):
        JobEnv.detect({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})


def test_a_rank_outside_the_world_is_an_error():
    with pytest.raises(DistributedError, match=r"RANK must be in \[0, WORLD_SIZE=2\); received RANK=2"):
        JobEnv.detect(dict(JOB, RANK="2"))


def test_a_non_integer_variable_is_an_error():
    with pytest.raises(DistributedError, match=r"WORLD_SIZE must be an integer; received WORLD_SIZE='two'"):
        JobEnv.detect(dict(JOB, WORLD_SIZE="two"))


def test_rank_zero_only_does_nothing_on_other_ranks(monkeypatch, no_job):
    for k, v in JOB.items():
        monkeypatch.setenv(k, v)
    assert rank_zero_only(lambda: "ran")() is None
    monkeypatch.setenv("RANK", "0")
    assert rank_zero_only(lambda: "ran")() == "ran"


def test_init_without_a_job_says_how_to_start_one(no_job):
    with pytest.raises(DistributedError, match=r"no RANK/WORLD_SIZE.*torchrun.*launch\(devices\)"):
        init("cpu")


def test_unknown_accelerator_is_refused():
    with pytest.raises(DistributedError, match=r"accelerator must be 'cpu', 'cuda', 'gpu' or 'auto'; received 'tpu'"):
        DDPStrategy(accelerator="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_accelerator_without_cuda_is_refused():
    with pytest.raises(DistributedError, match=r"needs CUDA.*accelerator='cpu'"):
        DDPStrategy(accelerator="cuda")


def test_launch_under_a_job_of_another_size_is_refused(monkeypatch, no_job):
    for k, v in JOB.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(DistributedError, match=r"devices=3, but the job has 2 processes.*--nproc-per-node 3"):
        launch(3)


@pytest.mark.parametrize("devices", [0, 1.5, True])
def test_launch_refuses_devices_that_are_not_a_positive_int(devices, no_job):
    with pytest.raises(DistributedError, match="devices must be an int >= 1"):
        launch(devices)


def test_launch_with_one_device_starts_nothing(no_job):
    launch(1)
    assert JobEnv.detect() is None


# ---------------------------------------------------------------- a real one-process group
def test_init_is_idempotent(solo):
    assert init("cpu") == torch.device("cpu") and dist.get_world_size() == 1


def test_reduce_refuses_an_unknown_op(solo):
    with pytest.raises(MisconfigurationError, match=r"reduce op must be one of .*received op='median'"):
        solo.reduce(1.0, op="median")


def test_reduce_takes_lightnings_reduce_op_keyword_and_avg(solo):
    assert float(solo.reduce(3.0, reduce_op="avg")) == 3.0 and float(solo.reduce(3.0, reduce_op="sum")) == 3.0


def test_custom_sampler_is_wrapped_and_its_loader_kept(solo):
    sampler = WeightedRandomSampler([1.0] * 8, 8)
    out = solo.distributed_loader(DataLoader(TensorDataset(torch.arange(8)), batch_size=2, sampler=sampler))
    assert isinstance(out.sampler, ShardedSampler) and out.sampler.sampler is sampler and out.batch_size == 2
    assert not out.sampler.shuffle  # validation as Lightning: only a RandomSampler's loader shuffles
    predict = solo.distributed_loader(DataLoader(out.dataset, sampler=sampler), stage="predict")
    assert isinstance(predict.sampler, UnevenShardedSampler)


def test_sampler_without_a_length_is_refused_with_what_to_do(solo):
    class Endless(torch.utils.data.Sampler):
        def __iter__(self):
            return iter(range(8))

    loader = DataLoader(TensorDataset(torch.arange(8)), sampler=Endless())
    with pytest.raises(SamplerError, match=r"\(type Endless\) has no finite length.*use_distributed_sampler=False"):
        solo.distributed_loader(loader, shuffle=True)


class LastFirst(BatchSampler):
    def __iter__(self):
        return iter(list(super().__iter__())[::-1])


@pytest.mark.parametrize("stage, drop_last", [("train", True), ("predict", False)])
def test_custom_batch_sampler_is_made_again_around_the_distributed_sampler(solo, stage, drop_last):
    """As Lightning: type(bs)(sampler, batch_size=..., drop_last=...), drop_last False when predicting."""
    data = TensorDataset(torch.arange(9))
    out = solo.distributed_loader(DataLoader(data, batch_sampler=LastFirst(SequentialSampler(data), 2, True)),
                                  stage=stage)
    bs = out.batch_sampler
    assert type(bs) is LastFirst and (bs.batch_size, bs.drop_last) == (2, drop_last)
    assert type(bs.sampler) is (DistributedSampler if stage == "train" else UnevenSampler)
    assert [b[0].tolist() for b in out][0] == ([6, 7] if drop_last else [8])


def test_batch_sampler_that_cannot_take_the_sampler_is_refused_with_what_to_do(solo):
    class Bucketed(BatchSampler):
        def __init__(self, sampler, batch_size, drop_last, lengths):
            super().__init__(sampler, batch_size, drop_last)

    data = TensorDataset(torch.arange(8))
    loader = DataLoader(data, batch_sampler=Bucketed(SequentialSampler(data), 2, False, [1] * 8))
    with pytest.raises(SamplerError, match=r"Expected its class to be made as .*Bucketed\(sampler, batch_size=\.\.\., "
                                           r"drop_last=\.\.\.\).*received .*lengths.*use_distributed_sampler=False"):
        solo.distributed_loader(loader)


def test_batch_sampler_without_batch_size_is_refused_and_left_alone_for_predict(solo):
    """As Lightning: a TypeError when training; predicting warns and keeps it."""
    class Pairs:
        def __iter__(self):
            return iter([[0, 1], [2, 3]])

        def __len__(self):
            return 2

    loader = DataLoader(TensorDataset(torch.arange(4)), batch_sampler=Pairs())
    with pytest.raises(TypeError, match=r"Expected a torch.utils.data.BatchSampler.*received one without "
                                        r"batch_size and drop_last.*use_distributed_sampler=False"):
        solo.distributed_loader(loader)
    with pytest.warns(UserWarning, match=r"\(type .*Pairs\) has no batch_size and drop_last"):
        assert solo.distributed_loader(loader, stage="predict") is loader


def test_dataloader_subclass_is_refused_with_what_to_do(solo):
    class MyLoader(DataLoader):
        pass

    with pytest.raises(MisconfigurationError, match=r"MyLoader \(a DataLoader subclass\).*DistributedSampler"):
        solo.distributed_loader(MyLoader(TensorDataset(torch.arange(8)), batch_size=2))


def test_iterable_dataset_loader_is_left_alone(solo):
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(4))

    loader = DataLoader(Stream(), batch_size=2)
    assert solo.distributed_loader(loader) is loader


def test_workers_collate_and_drop_last_are_kept(solo):
    def collate(batch):
        return batch

    g = torch.Generator().manual_seed(3)
    loader = DataLoader(TensorDataset(torch.arange(9)), batch_size=2, shuffle=True, num_workers=1,
                        collate_fn=collate, drop_last=True, generator=g, persistent_workers=True)
    out = solo.distributed_loader(loader)
    assert (out.num_workers, out.collate_fn, out.drop_last, out.generator, out.persistent_workers) == \
        (1, collate, True, g, True)
    assert out.sampler.seed == 3 and out.sampler.shuffle


def test_setup_module_wraps_in_ddp_and_unwraps(solo):
    from ember.checkpoint.state import unwrap_model

    net = torch.nn.Linear(2, 2)
    wrapped = solo.setup_module(net)
    assert type(wrapped).__name__ == "DistributedDataParallel" and unwrap_model(wrapped) is net
    assert solo.setup_module(wrapped) is wrapped


def test_failure_board_reports_the_first_failure():
    master = dist.TCPStore("127.0.0.1", 0, 1, True, timeout=timedelta(seconds=10))
    board = FailureBoard(master)
    assert board.first() is None
    board.post(1, "ValueError: boom")
    FailureBoard.connect("127.0.0.1", master.port).post(0, "later")
    assert board.first() == (1, "ValueError: boom")
    assert FailureBoard(master, restart=1).first() is None  # a restarted torchrun attempt starts clean


# ---------------------------------------------------------------- loop-state layout across world sizes
def _saved_on_two(epoch_done: bool, batch: int) -> dict:
    return {"epoch": 1, "batch": batch, "global_step": 9, "epoch_done": epoch_done, "rng": "rng0", "data": "data0",
            "accumulated_grads": None, "ranks": [{"rng": "rng0", "data": "data0"}, {"rng": "rng1", "data": "data1"}]}


def test_single_process_takes_rank_zeros_state_at_an_epoch_end(no_job):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = ranks.scatter(_saved_on_two(True, 6))
    assert (state["rng"], state["data"], state["batch"], "ranks" in state) == ("rng0", "data0", 6, False)


def test_other_world_size_mid_epoch_restarts_the_epoch_with_a_warning(no_job):
    with pytest.warns(UserWarning, match=r"saved on 2 rank\(s\) part-way through epoch 1 .* restarts from its first"):
        state = ranks.scatter(_saved_on_two(False, 3), "mid.ckpt")
    assert (state["epoch"], state["batch"], state["global_step"]) == (1, 0, 9)


def test_single_process_checkpoint_needs_no_ranks(no_job):
    saved = {k: v for k, v in _saved_on_two(False, 3).items() if k != "ranks"}
    assert ranks.scatter(saved) == saved


def test_malformed_ranks_are_refused(no_job):
    with pytest.raises(CheckpointMismatchError, match=r"loops\['fit'\]\['ranks'\] must be a non-empty list"):
        ranks.scatter(dict(_saved_on_two(False, 3), ranks={"0": {}}), "bad.ckpt")


def test_gather_without_a_group_returns_the_state_unchanged(no_job):
    assert ranks.gather({"rng": 1, "data": 2}) == {"rng": 1, "data": 2}
    assert group.watch() is None
