"""Programs shaped as users write them (tests/distributed/jobs/user_programs.py) on 2 gloo ranks, started
by ember's self-launch: ``self(x)`` and hooks that call the model under DDP (DDP wraps a dispatch
module, the user's ``forward`` stays theirs), FSDP with a validation loader on default settings,
evaluation sharded by DistributedSampler with ``sync_dist`` reduced, predict's per-rank results,
manual optimization, and ``trainer.strategy``. One launch per strategy, shared by every test here."""

from __future__ import annotations

import json

import jobrunner
import pytest


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def ranks(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    r = jobrunner.run("fork", "user_programs.py", str(root), "--strategy", request.param, "--launch", "2",
                      timeout=240)
    assert r.returncode == 0, r.output
    return request.param, [json.loads((root / f"rank{i}.json").read_text()) for i in (0, 1)]


def test_self_call_and_a_hook_that_calls_the_model_train_on_every_rank(ranks):
    """DDP: the user's forward (with a torch.compile'd submodule) is called by self(x) inside
    training_step; FSDP: the same program with its validation loader on defaults (sanity check,
    inference_mode=True) gets past the sanity check and trains."""
    _, (r0, r1) = ranks
    assert r0["seen_fit"]["hook_calls"] == r1["seen_fit"]["hook_calls"] == 2  # 32 samples / 2 ranks / batch 8


def test_each_rank_validates_half_of_64_samples(ranks):
    _, (r0, r1) = ranks
    assert r0["seen_fit"]["validation"] == r1["seen_fit"]["validation"] == 32
    assert r0["seen_eval"]["validation"] == r1["seen_eval"]["validation"] == 32  # trainer.validate too


def test_synced_val_loss_equals_the_one_process_mean_over_all_64(ranks):
    _, (r0, r1) = ranks
    reference = r0["reference_val_loss"]
    for r in (r0, r1):
        assert abs(r["fit_metrics"]["val_loss"] - reference) <= 1e-6
        assert abs(r["validate"][0]["val_loss"] - reference) <= 1e-6


def test_synced_metrics_are_equal_on_every_rank(ranks):
    _, (r0, r1) = ranks
    assert r0["fit_metrics"] == r1["fit_metrics"] and r0["validate"] == r1["validate"]
    assert r0["test"] == r1["test"] and r0["test"][0]["test_samples"] == 64.0  # each rank tested 32


def test_predict_returns_each_ranks_own_predictions(ranks):
    """As Lightning's DDP (checked by running it): no gather, rank r gets samples r, r+2, ...; under
    DDP nothing is repeated (63 samples: 32 + 31); under FSDP every predict_step is a collective, so
    the shorter rank is padded with a repeated sample."""
    strategy, (r0, r1) = ranks
    assert r0["predicted_ids"] == list(range(0, 63, 2))
    if strategy == "ddp":
        assert r1["predicted_ids"] == list(range(1, 63, 2))
    else:
        assert r1["predicted_ids"] == [*range(1, 63, 2), 0]


def test_manual_optimization_all_reduces_gradients(ranks):
    """Two optimizers stepped by hand after manual_backward: ranks trained on different shards end
    with equal weights only if the gradients were all-reduced."""
    _, (r0, r1) = ranks
    assert r0["manual_steps"] == r1["manual_steps"] == 8
    assert r0["manual_weights"] == r1["manual_weights"]


def test_the_strategy_object_tells_each_ranks_place(ranks):
    strategy, (r0, r1) = ranks
    for rank, r in enumerate((r0, r1)):
        assert r["strategy"] == {"type": {"ddp": "DDPStrategy", "fsdp": "FSDPStrategy"}[strategy],
                                 "root_device": "cpu", "world_size": 2, "global_rank": rank, "local_rank": rank,
                                 "is_global_zero": rank == 0, "broadcast": "from rank 0", "barrier": None}
        assert r["trainer"] == {"num_devices": 2, "num_nodes": 1, "node_rank": 0, "device_ids": [0, 1]}


def test_ddp_validation_sees_rank_0s_batchnorm_statistics(ranks):
    """Each rank's last training batch moved its BatchNorm running mean its own way; fit's validation
    starts from rank 0's on every rank (as Lightning's first validation forward through DDP)."""
    strategy, (r0, r1) = ranks
    if strategy != "ddp":
        pytest.skip("FSDP does not broadcast buffers (nor does Lightning's)")
    assert r0["bn_seen"]["after_training"] != r1["bn_seen"]["after_training"]
    assert r0["bn_seen"]["validation"] == r1["bn_seen"]["validation"] == r0["bn_seen"]["after_training"]
