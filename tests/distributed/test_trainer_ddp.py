"""ember's Trainer on 2 gloo ranks (tests/distributed/jobs/trainer_ddp.py), started by torchrun, by
ember itself from a plain ``python`` process, or forked with torchrun's variables where how the ranks start
is not the subject (jobrunner's "fork"): checkpoints written once by rank 0 with every rank's
position, a mid-epoch resume that ends ``torch.equal`` to a run that never stopped, one rank's stop
request or error reaching every rank."""

from __future__ import annotations

import pytest
import torch

import ember
import jobrunner
from ember.checkpoint.storage.temporaries import is_temporary


def _weights(path):
    return ember.load_checkpoint(path)["state_dict"]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    r = jobrunner.run("fork", "trainer_ddp.py", str(root))
    assert r.returncode == 0, r.output
    return root


def test_ranks_end_with_the_same_weights(uninterrupted):
    """Gradients are all-reduced: both ranks, trained on different shards, hold the same weights."""
    r0, r1 = ember.load_checkpoint(uninterrupted / "rank0.ckpt"), ember.load_checkpoint(uninterrupted / "rank1.ckpt")
    assert (r0["world_size"], r0["global_step"], r1["global_step"]) == (2, 18, 18)
    assert _equal(r0["state_dict"], r1["state_dict"])


def test_save_checkpoint_on_every_rank_writes_one_file_with_every_ranks_position(uninterrupted):
    ckpt = ember.load_checkpoint(uninterrupted / "final.ckpt")
    ranks = ckpt["loops"]["fit"]["ranks"]
    assert len(ranks) == 2 and set(ranks[0]) == {"rng", "data"}
    assert not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])  # each rank's own stream
    assert _equal(ckpt["state_dict"], _weights(uninterrupted / "rank0.ckpt"))


@pytest.mark.parametrize("stop_by, resume_by", [("torchrun", "launcher"), ("launcher", "torchrun")])
def test_resumed_mid_epoch_equals_uninterrupted(stop_by, resume_by, uninterrupted, tmp_path):
    stopped = jobrunner.run(stop_by, "trainer_ddp.py", str(tmp_path), "--max-steps", "9")  # epoch 1, batch 3 of 6
    assert stopped.returncode == 0, stopped.output
    last = ember.load_checkpoint(tmp_path / "ckpts" / "last.ckpt")
    assert (last["epoch"], last["global_step"], last["loops"]["fit"]["batch"]) == (1, 9, 3)
    assert len(last["loops"]["fit"]["ranks"]) == 2
    resumed = jobrunner.run(resume_by, "trainer_ddp.py", str(tmp_path), "--resume")
    assert resumed.returncode == 0, resumed.output
    assert ember.load_checkpoint(tmp_path / "final.ckpt")["global_step"] == 18
    assert _equal(_weights(tmp_path / "final.ckpt"), _weights(uninterrupted / "final.ckpt"))
    assert _equal(_weights(tmp_path / "rank1.ckpt"), _weights(uninterrupted / "rank1.ckpt"))


def test_one_rank_stopping_stops_every_rank_at_the_same_step(tmp_path):
    r = jobrunner.run("fork", "trainer_ddp.py", str(tmp_path), "--stop-rank", "1", "--stop-step", "4")
    assert r.returncode == 0, r.output
    steps = [ember.load_checkpoint(tmp_path / f"rank{i}.ckpt")["global_step"] for i in (0, 1)]
    assert steps == [4, 4]


@pytest.mark.parametrize("how", ["torchrun", "launcher"])
def test_one_rank_failing_ends_every_rank_with_its_error(how, tmp_path):
    r = jobrunner.run(how, "trainer_ddp.py", str(tmp_path), "--fail-rank", "1", "--fail-step", "3")
    assert r.returncode != 0
    assert "boom at step 3" in r.output
    assert not (tmp_path / "final.ckpt").exists()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_one_rank_failing_during_a_save_ends_every_rank_with_its_error(strategy, tmp_path):
    r = jobrunner.run("launcher", "trainer_ddp.py", str(tmp_path), "--strategy", strategy, "--fail-save-rank", "1",
                      "--grace", "5")
    assert r.returncode != 0
    assert "boom while saving step 6" in r.output
    ckpts = tmp_path / "ckpts"
    for p in (ckpts.iterdir() if ckpts.exists() else []):  # whatever was committed is whole
        if not is_temporary(p.name):
            assert ember.load_checkpoint(p)["global_step"] == 6


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL)")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_on_two_gpus_ranks_agree_and_resume_exactly(strategy, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    r = jobrunner.run("launcher", "trainer_ddp.py", str(full), "--strategy", strategy, "--accelerator", "gpu")
    assert r.returncode == 0, r.output
    assert _equal(_weights(full / "rank0.ckpt"), _weights(full / "rank1.ckpt"))
    for extra in (["--max-steps", "9"], ["--resume"]):
        r = jobrunner.run("launcher", "trainer_ddp.py", str(part), "--strategy", strategy, "--accelerator", "gpu",
                          *extra)
        assert r.returncode == 0, r.output
    assert _equal(_weights(part / "rank1.ckpt"), _weights(full / "rank1.ckpt"))
