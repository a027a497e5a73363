"""Reading checkpoints through a store: the format reads (file, size, label), so any backend serves it."""

from __future__ import annotations

import io

import pytest
import torch

from ember.checkpoint.format import codec, container
from ember.checkpoint.io import header_in, load_from, verify_in
from ember.checkpoint.storage.local import LocalStorage, MemoryStorage
from ember.errors import CheckpointCorruptError, CheckpointError

STATE = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 4, "c": torch.ones(2, dtype=torch.complex128)}


def put_checkpoint(store, name, state=STATE):
    with store.open_write(name) as f:
        container.write(f, *codec.flatten(state))


@pytest.fixture(params=["memory", "local"])
def store(request, tmp_path):
    return MemoryStorage() if request.param == "memory" else LocalStorage(tmp_path)


def test_load_from_a_store_round_trips(store):
    put_checkpoint(store, "a.ckpt")
    out = load_from(store, "a.ckpt")
    assert out["epoch"] == 4 and torch.equal(out["state_dict"]["w"], STATE["state_dict"]["w"])
    assert torch.equal(out["c"], STATE["c"])


def test_load_from_with_mmap_reads_a_store_without_files(store):
    put_checkpoint(store, "a.ckpt")
    assert torch.equal(load_from(store, "a.ckpt", mmap=True, verify=False)["state_dict"]["w"], STATE["state_dict"]["w"])


def test_load_from_reads_a_torch_save_file_weights_only(store):
    with store.open_write("t.pt") as f:
        torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, f)
    assert load_from(store, "t.pt")["epoch"] == 3


def test_load_from_a_missing_name_names_the_location():
    store = MemoryStorage()
    with pytest.raises(CheckpointError, match="no checkpoint at memory://gone.ckpt"):
        load_from(store, "gone.ckpt")


def test_verify_in_names_the_damaged_object():
    store = MemoryStorage()
    put_checkpoint(store, "a.ckpt")
    with store.open_read("a.ckpt") as (f, _):
        data = bytearray(f.read())
    data[-1] ^= 1
    with store.open_write("a.ckpt") as f:
        f.write(bytes(data))
    with pytest.raises(CheckpointCorruptError, match="memory://a.ckpt.*CRC-32C"):
        verify_in(store, "a.ckpt")


def test_header_in_reads_only_the_header(store):
    put_checkpoint(store, "a.ckpt")
    h = header_in(store, "a.ckpt")
    assert h["kind"] == "ember" and h["tensors"]["state_dict.w"]["shape"] == (2, 3)
    assert codec.unflatten(h["tree"], None)["epoch"] == 4


def test_read_stream_reads_from_any_binary_file():
    buf = io.BytesIO()
    container.write(buf, *codec.flatten(STATE))
    size = buf.tell()
    buf.seek(0)
    tree, tensors = container.read_stream(buf, size, "in-memory")
    assert codec.unflatten(tree, tensors)["epoch"] == 4


def test_a_short_stream_is_truncation_naming_the_label():
    buf = io.BytesIO()
    container.write(buf, *codec.flatten(STATE))
    data = buf.getvalue()
    with pytest.raises(CheckpointCorruptError, match="corrupt checkpoint my-label: the file is truncated"):
        container.verify_stream(io.BytesIO(data[:-4]), len(data), "my-label")


def test_a_folder_checkpoint_name_is_explained(tmp_path):
    (tmp_path / "run.ckpt").mkdir()
    with pytest.raises(CheckpointError, match="it is a directory"):
        verify_in(LocalStorage(tmp_path), "run.ckpt")
