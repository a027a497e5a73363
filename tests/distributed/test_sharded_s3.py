"""Sharded checkpoint folders on an object store (the moto S3 server): every rank uploads its own rank
file, metadata.json is written last, after every upload completed, and is the commit marker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import ember
from ember.checkpoint.lookup import checkpoint_names
from ember.checkpoint.sharded import load_sharded, save_sharded
from ember.checkpoint.sharded.objects import remove_uncommitted
from ember.checkpoint.storage.locations import open_store
from ember.cli import main as cli

import jobrunner

pytest.importorskip("s3fs")


def test_a_plain_process_saves_and_loads_a_folder_on_s3(s3_bucket):
    url = s3_bucket + "/run/a.ckpt"
    save_sharded({"state_dict": {"w": torch.arange(12.0).reshape(3, 4)}, "epoch": 3}, url)
    store = open_store(s3_bucket + "/run")
    assert store.list("") == ["a.ckpt/metadata.json", "a.ckpt/rank-00000.safetensors"]
    assert torch.equal(ember.load_checkpoint(url)["state_dict"]["w"], torch.arange(12.0).reshape(3, 4))
    into = {"state_dict": {"w": torch.zeros(3, 4)}, "epoch": 0}
    assert load_sharded(into, url)["epoch"] == 3 and into["state_dict"]["w"][2, 3] == 11


def test_ember_ckpt_verify_and_ls_read_a_folder_on_s3(s3_bucket, capsys):
    save_sharded({"w": torch.ones(4), "epoch": 2, "global_step": 7}, s3_bucket + "/run/a.ckpt")
    assert cli(["ckpt", "verify", s3_bucket + "/run/a.ckpt"]) == 0
    assert capsys.readouterr().out.startswith("OK ")
    assert cli(["ckpt", "ls", s3_bucket + "/run", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["checkpoints"]
    assert [(r["name"], r["format"], r["global_step"]) for r in rows] == [("a.ckpt", "ember-sharded", 7)]


def test_a_folder_without_its_metadata_is_no_checkpoint_and_is_cleaned_up(s3_bucket):
    save_sharded({"w": torch.ones(4)}, s3_bucket + "/run/a.ckpt")
    save_sharded({"w": torch.zeros(4)}, s3_bucket + "/run/b.ckpt")
    store = open_store(s3_bucket + "/run")
    store.delete("b.ckpt/metadata.json")  # what a save killed before its commit leaves
    assert checkpoint_names(store) == ["a.ckpt"]
    with pytest.raises(ember.CheckpointError, match="no metadata.json, so no save there completed"):
        load_sharded({"w": torch.zeros(4)}, s3_bucket + "/run/b.ckpt")
    assert remove_uncommitted(store, older_than=3600) == []  # a save may still be running elsewhere
    assert remove_uncommitted(store, older_than=0) == ["b.ckpt"]
    assert store.list("") == ["a.ckpt/metadata.json", "a.ckpt/rank-00000.safetensors"]


def test_saving_again_at_a_name_replaces_the_folder_whole(s3_bucket):
    url = s3_bucket + "/run/last.ckpt"
    save_sharded({"w": torch.ones(4), "step": 1}, url)
    save_sharded({"w": torch.full((4,), 2.0), "step": 2}, url)
    got = ember.load_checkpoint(url)
    assert got["step"] == 2 and torch.equal(got["w"], torch.full((4,), 2.0))


def _fit(root, ckpt_dir, *extra, nproc=2):
    r = jobrunner.run("fork", "trainer_ddp.py", str(root), "--strategy", "fsdp", "--ckpt-dir", ckpt_dir,
                      "--every-step", *extra, nproc=nproc, timeout=180)
    assert r.returncode == 0, r.output[-3000:]
    return ember.load_checkpoint(root / "rank0.ckpt")


def test_fsdp_run_checkpoints_to_s3_resumes_there_on_2_ranks_and_reads_in_one_process(s3_bucket, tmp_path):
    url = s3_bucket + "/fsdp"
    whole = _fit(tmp_path / "whole", str(tmp_path / "whole-ckpts"), "--max-steps", "6")
    _fit(tmp_path / "first", url, "--max-steps", "3")
    store = open_store(url)
    assert "last.ckpt" in checkpoint_names(store)
    resumed = _fit(tmp_path / "second", url, "--max-steps", "6", "--resume")
    assert resumed["global_step"] == 6
    for k, v in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][k], v), k
    last = ember.load_checkpoint(url + "/last.ckpt")  # a plain process: every tensor whole
    assert last["global_step"] == 6
    assert torch.equal(last["state_dict"]["net.0.weight"], whole["state_dict"]["net.0.weight"])


def test_an_fsdp_folder_on_s3_resumes_in_one_process(s3_bucket, tmp_path):
    url = s3_bucket + "/one"
    _fit(tmp_path / "first", url, "--max-steps", "3")
    r = jobrunner.run("fork", "trainer_ddp.py", str(tmp_path / "single"), "--strategy", "ddp", "--ckpt-dir",
                      url, "--max-steps", "5", "--resume", nproc=1, timeout=180)
    assert r.returncode == 0, r.output[-3000:]
    assert ember.load_checkpoint(tmp_path / "single" / "rank0.ckpt")["global_step"] == 5


def test_a_kill_during_the_uploads_leaves_no_visible_partial_folder(s3_bucket, tmp_path):
    url = s3_bucket + "/killed"
    env = jobrunner.clean_env()
    cmd = [sys.executable, str(jobrunner.JOBS / "sharded_fsdp.py"), "loop", url, "--width", "2000000", "--launch", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        saved = []
        deadline = time.monotonic() + 150
        while len(saved) < 2 and time.monotonic() < deadline:  # a committed save, then into the next one
            line = proc.stdout.readline()
            assert line, "the job ended before saving twice"
            if line.startswith("saved "):
                saved.append(int(line.split()[1]))
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    store = open_store(url)
    names = checkpoint_names(store)
    assert names in ([], ["last.ckpt"]), names
    if names:  # the kill came after a commit: what is listed is complete and verifies
        assert cli(["ckpt", "verify", url + "/last.ckpt"]) == 0
    else:  # the kill came during the uploads: nothing listed, nothing readable, leftovers cleaned up
        # (rank objects already uploaded: "no metadata.json"; none yet, only incomplete multipart uploads)
        with pytest.raises(ember.CheckpointError, match="no save there completed|the file does not exist"):
            ember.load_checkpoint(url + "/last.ckpt")
        remove_uncommitted(store, older_than=0)
        store.cleanup(older_than=0)  # aborts the killed ranks' incomplete multipart uploads
        assert store.list("") == []
