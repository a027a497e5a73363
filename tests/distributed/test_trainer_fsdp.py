"""ember's Trainer with strategy="fsdp" on gloo ranks (tests/distributed/jobs/trainer_ddp.py): checkpoints
are folders written by every rank; a mid-epoch resume ends ``torch.equal`` to a run that never stopped;
a folder saved on 2 ranks resumes on 1 process, on 3 FSDP ranks and on 2 DDP ranks with the weights it
saved."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import ember
import jobrunner
from ember.checkpoint.sharded import is_sharded_checkpoint, verify_sharded
from ember.checkpoint.storage.temporaries import is_temporary


def _weights(path):
    return ember.load_checkpoint(path)["state_dict"]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp_uninterrupted")
    r = jobrunner.run("fork", "trainer_ddp.py", str(root), "--strategy", "fsdp")
    assert r.returncode == 0, r.output
    return root


def test_fsdp_checkpoints_are_verified_folders_and_ranks_agree(uninterrupted):
    ckpts = uninterrupted / "ckpts"
    for name in ("epoch=2-step=18.ckpt", "last.ckpt"):
        assert is_sharded_checkpoint(ckpts / name)
        verify_sharded(ckpts / name)
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=2-step=18.ckpt", "last.ckpt"]  # top-1 kept
    final = ember.load_checkpoint(uninterrupted / "final.ckpt")  # a folder, read whole in this process
    assert final["global_step"] == 18 and len(final["loops"]["fit"]["ranks"]) == 2
    assert _equal(final["state_dict"], _weights(uninterrupted / "rank0.ckpt"))
    assert _equal(_weights(uninterrupted / "rank0.ckpt"), _weights(uninterrupted / "rank1.ckpt"))


def test_fsdp_resumed_mid_epoch_equals_uninterrupted(uninterrupted, tmp_path):
    stopped = jobrunner.run("torchrun", "trainer_ddp.py", str(tmp_path), "--strategy", "fsdp", "--max-steps", "9")
    assert stopped.returncode == 0, stopped.output
    assert ember.load_checkpoint(tmp_path / "ckpts" / "last.ckpt")["loops"]["fit"]["batch"] == 3
    resumed = jobrunner.run("fork", "trainer_ddp.py", str(tmp_path), "--strategy", "fsdp", "--resume")
    assert resumed.returncode == 0, resumed.output
    assert _equal(_weights(tmp_path / "rank1.ckpt"), _weights(uninterrupted / "rank1.ckpt"))


def test_an_fsdp_dirpath_resumed_in_one_process_saves_files_over_its_folders(uninterrupted, tmp_path):
    """issue 16: the first single-file save onto last.ckpt (a folder of the FSDP run) died with
    "Is a directory"; the file now takes the name (atomic swap) and the run goes on."""
    shutil.copytree(uninterrupted / "ckpts", tmp_path / "ckpts")
    r = jobrunner.run("fork", "trainer_ddp.py", str(tmp_path), "--resume", "--max-epochs", "4", nproc=1)
    assert r.returncode == 0, r.output
    last = tmp_path / "ckpts" / "last.ckpt"
    assert last.is_file() and ember.load_checkpoint(last)["global_step"] == 18 + 12  # one epoch of 12 batches
    assert (tmp_path / "ckpts" / "epoch=3-step=30.ckpt").is_file()  # (the copied folders' bookkeeping names
    # the original dirpath, so the keep policy leaves the copy of epoch=2-step=18.ckpt alone)


@pytest.fixture(scope="module")
def saved_on_two(tmp_path_factory):
    """An FSDP run on 2 ranks stopped at the end of epoch 1 (step 12)."""
    root = tmp_path_factory.mktemp("fsdp_two")
    r = jobrunner.run("torchrun", "trainer_ddp.py", str(root), "--strategy", "fsdp", "--max-epochs", "2")
    assert r.returncode == 0, r.output
    return root / "ckpts" / "last.ckpt"


@pytest.mark.parametrize("nproc, strategy, steps", [(1, "fsdp", 12 + 12), (3, "fsdp", 12 + 4), (2, "ddp", 12 + 6)])
def test_a_folder_saved_on_two_ranks_resumes_on_another_world(saved_on_two, tmp_path, nproc, strategy, steps):
    r = jobrunner.run("fork", "trainer_ddp.py", str(tmp_path), "--strategy", strategy, "--resume",
                      str(saved_on_two), "--weights-at-start", str(tmp_path / "start.ckpt"), nproc=nproc)
    assert r.returncode == 0, r.output
    assert _equal(_weights(tmp_path / "start.ckpt"), _weights(saved_on_two))
    assert ember.load_checkpoint(tmp_path / "rank0.ckpt")["global_step"] == steps


def _stamp(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _kill_job_while_saving(root, delay: float) -> None:
    """Start the FSDP job (ember's launcher: rank 0 starts rank 1) saving after every step, resuming from
    "last"; once it has committed a new ``last.ckpt``, wait ``delay`` seconds (it saves on) and SIGKILL
    every process of it."""
    cmd = [sys.executable, str(jobrunner.JOBS / "trainer_ddp.py"), str(root), "--strategy", "fsdp", "--every-step",
           "--resume", "--launch", "2"]
    last = root / "ckpts" / "last.ckpt"
    before = _stamp(last)
    p = subprocess.Popen(cmd, env=jobrunner.clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while p.poll() is None and _stamp(last) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)


def test_fsdp_job_killed_during_saves_leaves_only_good_folders_and_resumes_exactly(uninterrupted, tmp_path):
    """SIGKILL of the whole job at several moments while it saves a folder after every step: every
    checkpoint left verifies, and resuming from "last" ends equal to the run that never stopped."""
    steps = []
    for delay in (0.0, 0.15, 0.3):
        _kill_job_while_saving(tmp_path, delay)
        ckpts = tmp_path / "ckpts"
        for p in (ckpts.iterdir() if ckpts.exists() else []):
            if not is_temporary(p.name):
                verify_sharded(p)
        if (ckpts / "last.ckpt").exists():
            steps.append(ember.load_checkpoint(ckpts / "last.ckpt")["global_step"])
    assert steps and steps[-1] < 18, f"the kills must land while the job trains (last saved steps: {steps})"
    done = jobrunner.run("fork", "trainer_ddp.py", str(tmp_path), "--strategy", "fsdp", "--every-step",
                         "--resume")
    assert done.returncode == 0, done.output
    assert _equal(_weights(tmp_path / "rank1.ckpt"), _weights(uninterrupted / "rank1.ckpt"))


@pytest.mark.parametrize("how", ["launcher", "torchrun"])
def test_a_background_sharded_save_holds_the_state_of_the_moment_it_was_called(how, tmp_path):
    r = jobrunner.run(how, "sharded_background.py", str(tmp_path))
    assert r.returncode == 0, r.output
    assert _equal(_weights(tmp_path / "run.ckpt"), _weights(tmp_path / "expected.ckpt"))


def test_a_folder_builds_its_module_in_one_plain_process(uninterrupted):
    spec = importlib.util.spec_from_file_location("trainer_ddp_job", jobrunner.JOBS / "trainer_ddp.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    model = job.Net.load_from_checkpoint(uninterrupted / "final.ckpt")
    assert not torch.distributed.is_initialized()
    assert _equal(dict(model.state_dict()), _weights(uninterrupted / "rank0.ckpt"))


def test_a_module_that_shards_itself_in_configure_model_gets_the_mesh_once(tmp_path):
    r = jobrunner.run("fork", "trainer_ddp.py", str(tmp_path), "--strategy", "fsdp", "--configure-model",
                      "--max-epochs", "1")
    assert r.returncode == 0, r.output
    ranks = [ember.load_checkpoint(tmp_path / f"rank{i}.ckpt") for i in (0, 1)]
    assert [c["configure_model_calls"] for c in ranks] == [1, 1]
    assert _equal(ranks[0]["state_dict"], ranks[1]["state_dict"]) and ranks[0]["global_step"] == 6
