"""Sharded checkpoint folders in one plain process (no torch.distributed): round trips, damage,
incomplete folders, overwrites, and torch's pickled `.metadata` refused without running it."""

from __future__ import annotations

import argparse
import json
import os
import pickle
from collections import OrderedDict

import pytest
import torch

import ember
from ember.checkpoint.storage.temporaries import wait_discards
from ember.checkpoint.sharded import (ShardWriter, consolidate, is_sharded_checkpoint, load_sharded, read_full,
                                      save_sharded, verify_sharded)
from ember.errors import CheckpointCorruptError, CheckpointError, CheckpointMismatchError, UnsafeCheckpointError


def make_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    m = torch.nn.Linear(4, 3)
    return {
        "state_dict": m.state_dict(),
        "epoch": 3, "global_step": 17, "loops": {"fit": {"epoch": 3}},
        "hyper_parameters": argparse.Namespace(lr=0.1, sizes=(4, 3), name="tiny", big=10**30, nan=float("-inf")),
        "callbacks": OrderedDict([("ckpt", {"best": None, "scores": [1.5, b"x"]})]),
        "carried": torch.randn(3, dtype=torch.complex128),
        "bf16": torch.randn(2, 2).to(torch.bfloat16),
        "scalar": torch.tensor(7),
        "empty": torch.empty(0, 5),
    }


def assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, argparse.Namespace):
        assert_same(vars(a), vars(b))
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b


def test_read_full_gives_what_a_single_file_checkpoint_gives(tmp_path):
    state = make_state()
    save_sharded(state, tmp_path / "run.ckpt")
    ember.save_checkpoint(state, tmp_path / "one.ckpt")
    assert_same(read_full(tmp_path / "run.ckpt"), ember.load_checkpoint(tmp_path / "one.ckpt"))
    assert_same(ember.load_checkpoint(tmp_path / "run.ckpt"), ember.load_checkpoint(tmp_path / "one.ckpt"))


def test_folder_holds_rank_files_and_json_metadata_and_no_pickle(tmp_path):
    save_sharded(make_state(), tmp_path / "run.ckpt")
    assert sorted(os.listdir(tmp_path / "run.ckpt")) == ["metadata.json", "rank-00000.safetensors"]
    meta = json.loads((tmp_path / "run.ckpt" / "metadata.json").read_text())
    assert meta["world_size"] == 1 and dict(meta["tensors"])["state_dict.weight"]["size"] == [3, 4]
    for name in os.listdir(tmp_path / "run.ckpt"):
        data = (tmp_path / "run.ckpt" / name).read_bytes()
        assert b"\x80\x02" not in data[:2] and b"cbuiltins" not in data and b"torch._utils" not in data
    assert ember.checkpoint.format.container.is_ember_file(tmp_path / "run.ckpt" / "rank-00000.safetensors")


def test_load_sharded_fills_tensors_in_place_and_returns_the_whole_checkpoint(tmp_path):
    saved = make_state(0)
    save_sharded(saved, tmp_path / "run.ckpt")
    m = torch.nn.Linear(4, 3)
    state = {"state_dict": m.state_dict(), "scalar": torch.tensor(0)}
    got = load_sharded(state, tmp_path / "run.ckpt")
    assert torch.equal(m.weight, saved["state_dict"]["weight"]) and int(state["scalar"]) == 7
    assert got["state_dict"]["weight"] is state["state_dict"]["weight"]  # the state's own tensor
    assert_same(got["hyper_parameters"], saved["hyper_parameters"])
    assert torch.equal(got["carried"], saved["carried"])  # not in the state: loaded whole


def test_load_sharded_refuses_a_state_that_does_not_fit(tmp_path):
    save_sharded(make_state(), tmp_path / "run.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"state_dict.weight: the checkpoint's tensor is \[3, 4\]"):
        load_sharded({"state_dict": torch.nn.Linear(5, 3).state_dict()}, tmp_path / "run.ckpt")
    with pytest.raises(CheckpointMismatchError, match="has no tensor other"):
        load_sharded({"other": torch.zeros(1)}, tmp_path / "run.ckpt")


def test_unstorable_value_fails_before_anything_is_written(tmp_path):
    with pytest.raises(CheckpointError, match=r"state.fn|fn: .* cannot be stored"):
        save_sharded({"w": torch.ones(2), "fn": print}, tmp_path / "run.ckpt")
    assert os.listdir(tmp_path) == []


def test_a_single_file_checkpoint_at_the_name_is_not_replaced_by_a_folder(tmp_path):
    ember.save_checkpoint({"w": torch.ones(1)}, tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match="last.ckpt: it is a file; choose a folder name"):
        save_sharded({"w": torch.ones(1)}, tmp_path / "last.ckpt")
    assert ember.load_checkpoint(tmp_path / "last.ckpt")["w"].tolist() == [1.0]
    assert os.listdir(tmp_path) == ["last.ckpt"]


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_non_tensor_value_given_to_dcp_is_refused(tmp_path):
    import torch.distributed.checkpoint as dcp

    with pytest.raises(BaseException, match="not a tensor: ember's sharded writer stores only tensors"):
        dcp.save({"epoch": 3, "w": torch.ones(2)}, storage_writer=ShardWriter(tmp_path), no_dist=True)
    assert not (tmp_path / "metadata.json").exists()


@pytest.mark.parametrize("victim", ["rank-00000.safetensors", "metadata.json"])
def test_a_damaged_byte_is_caught_by_verify_load_and_read_full(tmp_path, victim):
    save_sharded(make_state(), tmp_path / "run.ckpt")
    path = tmp_path / "run.ckpt" / victim
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # in the last tensor's bytes, or inside the metadata's JSON
    path.write_bytes(bytes(data))
    for attempt in (verify_sharded, read_full,
                    lambda p: load_sharded({"state_dict": torch.nn.Linear(4, 3).state_dict()}, p)):
        with pytest.raises(CheckpointCorruptError, match=victim if victim != "metadata.json" else "metadata.json"):
            attempt(tmp_path / "run.ckpt")
    assert not is_sharded_checkpoint(tmp_path / "run.ckpt") or victim != "metadata.json"


def test_a_truncated_rank_file_is_caught(tmp_path):
    save_sharded(make_state(), tmp_path / "run.ckpt")
    path = tmp_path / "run.ckpt" / "rank-00000.safetensors"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CheckpointCorruptError, match="rank-00000.safetensors: it is .* bytes, the metadata says"):
        verify_sharded(tmp_path / "run.ckpt")


def test_a_folder_without_metadata_is_not_a_checkpoint(tmp_path):
    save_sharded(make_state(), tmp_path / "run.ckpt")
    (tmp_path / "run.ckpt" / "metadata.json").unlink()
    assert not is_sharded_checkpoint(tmp_path / "run.ckpt")
    for attempt in (verify_sharded, read_full, ember.load_checkpoint):
        with pytest.raises(CheckpointError, match="no metadata.json, so its save never completed"):
            attempt(tmp_path / "run.ckpt")


def test_saving_again_replaces_the_folder_and_leaves_no_temporaries(tmp_path):
    save_sharded(make_state(0), tmp_path / "last.ckpt")
    save_sharded({**make_state(1), "global_step": 18}, tmp_path / "last.ckpt")
    wait_discards()  # the replaced folder is removed on a background thread
    assert os.listdir(tmp_path) == ["last.ckpt"]
    got = read_full(tmp_path / "last.ckpt")
    assert got["global_step"] == 18 and torch.equal(got["state_dict"]["weight"], make_state(1)["state_dict"]["weight"])


def test_a_refused_save_leaves_the_previous_checkpoint_intact(tmp_path):
    save_sharded(make_state(0), tmp_path / "last.ckpt")
    before = {n: (tmp_path / "last.ckpt" / n).read_bytes() for n in os.listdir(tmp_path / "last.ckpt")}
    bad = {**make_state(1), "weird": torch.ones(2).to_sparse()}
    with pytest.raises(CheckpointError, match="weird"):
        save_sharded(bad, tmp_path / "last.ckpt")
    assert {n: (tmp_path / "last.ckpt" / n).read_bytes() for n in os.listdir(tmp_path / "last.ckpt")} == before


def test_consolidate_writes_one_verified_file(tmp_path):
    state = make_state()
    save_sharded(state, tmp_path / "run.ckpt")
    consolidate(tmp_path / "run.ckpt", tmp_path / "one.ckpt")
    ember.checkpoint.format.container.verify_file(tmp_path / "one.ckpt")
    assert_same(ember.load_checkpoint(tmp_path / "one.ckpt"), read_full(tmp_path / "run.ckpt"))


URL_REFUSED = (r"this function reads sharded checkpoints in local folders only \(a path, or file://\), received "
               r"'s3://bucket/run.ckpt'\. For a sharded folder at a URL use save_sharded/load_sharded or "
               r"ember\.load_checkpoint")


@pytest.mark.parametrize("read", [read_full, verify_sharded, lambda url: consolidate(url, "one.ckpt")],
                         ids=["read_full", "verify_sharded", "consolidate"])
def test_local_readers_given_a_url_say_which_functions_take_urls_before_anything_is_read(read):
    with pytest.raises(CheckpointError, match=URL_REFUSED):
        read("s3://bucket/run.ckpt")
    assert not is_sharded_checkpoint("s3://bucket/run.ckpt")


def test_file_urls_are_local_folders_and_storage_options_are_refused_for_them(tmp_path):
    save_sharded({"w": torch.ones(2)}, f"file://{tmp_path}/run.ckpt")
    assert torch.equal(read_full(tmp_path / "run.ckpt")["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match="storage_options are for URLs; .* pass storage_options=None"):
        save_sharded({"w": torch.ones(2)}, tmp_path / "other.ckpt", storage_options={"anon": True})
    assert not (tmp_path / "other.ckpt").exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_torch_dcp_folder_is_refused_and_its_pickle_never_runs(tmp_path):
    folder = tmp_path / "torch.ckpt"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    (folder / "__0_0.distcp").write_bytes(b"")
    for attempt in (read_full, verify_sharded, ember.load_checkpoint,
                    lambda p: load_sharded({"w": torch.zeros(1)}, p)):
        with pytest.raises(UnsafeCheckpointError, match="pickle, which ember never loads.*dcp_to_torch_save"):
            attempt(folder)
    assert not is_sharded_checkpoint(folder)
    assert not marker.exists()
