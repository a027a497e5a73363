"""FSDP2 on 2 real gloo processes saves a sharded checkpoint; a plain process reads it whole; 1 and 3
processes load it back into freshly built models (resharding); damage in any rank file is caught."""

from __future__ import annotations

import shutil

import pytest
import torch

import ember
import jobrunner
from ember.checkpoint.sharded import load_sharded, read_full, verify_sharded
from ember.errors import CheckpointCorruptError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    r = jobrunner.run("torchrun", "sharded_fsdp.py", "save", str(out))
    assert r.returncode == 0, r.output
    return out


@pytest.fixture(scope="module")
def saved_under_launcher(tmp_path_factory):
    """The same job started as a plain ``python sharded_fsdp.py save OUT --launch 2`` (ember's launcher)."""
    out = tmp_path_factory.mktemp("fsdp-launcher")
    r = jobrunner.run("launcher", "sharded_fsdp.py", "save", str(out))
    assert r.returncode == 0, r.output
    return out


def test_each_rank_wrote_its_file_and_rank_zero_the_metadata(saved):
    assert sorted(p.name for p in (saved / "run.ckpt").iterdir()) == \
        ["metadata.json", "rank-00000.safetensors", "rank-00001.safetensors"]
    verify_sharded(saved / "run.ckpt")


@pytest.mark.parametrize("how", ["torchrun", "launcher"])
def test_read_full_in_a_plain_process_equals_the_full_state_dict(request, how):
    """The reference is get_model_state_dict(model, full_state_dict=True) gathered by the job."""
    saved = request.getfixturevalue({"torchrun": "saved", "launcher": "saved_under_launcher"}[how])
    assert sorted(p.name for p in (saved / "run.ckpt").iterdir()) == \
        ["metadata.json", "rank-00000.safetensors", "rank-00001.safetensors"]
    full = read_full(saved / "run.ckpt")
    ref = ember.load_checkpoint(saved / "full.ckpt")["state_dict"]
    assert list(full["state_dict"]) == list(ref)
    for name, t in ref.items():
        assert torch.equal(full["state_dict"][name], t), name
    assert full["hyper_parameters"] == {"lr": 0.1, "layers": (8, 9, 3), "name": "tiny"}
    assert (full["epoch"], full["global_step"]) == (1, 1) and torch.equal(full["replicated"], torch.arange(5))


def test_read_full_gives_the_whole_optimizer_state(saved):
    """The reference is get_optimizer_state_dict(model, optim, full_state_dict=True) from the job."""
    [optim] = read_full(saved / "run.ckpt")["optimizer_states"]
    ref = ember.load_checkpoint(saved / "full.ckpt")["optimizer"]
    assert sorted(optim["state"]) == sorted(ref["state"]) and len(optim["state"]) == 4
    for fqn, slots in ref["state"].items():
        for slot, t in slots.items():
            assert torch.equal(optim["state"][fqn][slot], t), (fqn, slot)
    assert optim["param_groups"] == ref["param_groups"]


def test_saved_on_2_loads_into_1_plain_process(saved):
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(8, 9), torch.nn.ReLU(), torch.nn.Linear(9, 3))
    got = load_sharded({"state_dict": m.state_dict()}, saved / "run.ckpt")
    ref = ember.load_checkpoint(saved / "full.ckpt")["state_dict"]
    for name, t in m.state_dict().items():
        assert torch.equal(t, ref[name]), name
    assert got["global_step"] == 1


@pytest.mark.parametrize("nproc", [1, 3])
def test_saved_on_2_loads_into_a_freshly_sharded_model_on_n_ranks(saved, nproc):
    r = jobrunner.run("torchrun", "sharded_fsdp.py", "load", str(saved), nproc=nproc)
    assert r.returncode == 0, r.output
    loaded = ember.load_checkpoint(saved / f"loaded-{nproc}.ckpt")
    ref = ember.load_checkpoint(saved / "full.ckpt")["state_dict"]
    for name, t in ref.items():
        assert torch.equal(loaded["state_dict"][name], t), name
    assert loaded["global_step"] == 1 and loaded["hyper_parameters"]["layers"] == (8, 9, 3)


@pytest.mark.parametrize("victim", ["rank-00000.safetensors", "rank-00001.safetensors"])
def test_a_flipped_byte_in_any_rank_file_is_caught(saved, tmp_path, victim):
    copy = tmp_path / "run.ckpt"
    shutil.copytree(saved / "run.ckpt", copy)
    data = bytearray((copy / victim).read_bytes())
    data[len(data) - 5] ^= 0x10
    (copy / victim).write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match=victim):
        verify_sharded(copy)
    with pytest.raises(CheckpointCorruptError, match=victim):
        read_full(copy)
