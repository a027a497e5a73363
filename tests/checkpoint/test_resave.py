"""Re-saving a name: the old file gets a temporary second name before the rename and is removed after
it, in the background when it is big (so the rename does not free its blocks on the caller's thread)."""

from __future__ import annotations

import os

import pytest
import torch

import ember
from ember.checkpoint.storage import temporaries
from ember.checkpoint.storage.local import TMP_PREFIX
from ember.errors import CheckpointError


def _state(i: int) -> dict:
    return {"global_step": i, "w": torch.full((1024,), float(i))}


def test_a_big_old_file_is_removed_in_the_background_and_the_name_holds_the_new_one(tmp_path, monkeypatch):
    monkeypatch.setattr(temporaries, "DISCARD_IN_BACKGROUND", 0)  # every old file counts as big
    target = tmp_path / "last.ckpt"
    for i in range(3):
        ember.save_checkpoint(_state(i), target)
        assert ember.load_checkpoint(target)["global_step"] == i
    temporaries.wait_discards()
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_a_small_old_file_is_removed_before_the_save_returns(tmp_path):
    target = tmp_path / "last.ckpt"
    ember.save_checkpoint(_state(0), target)
    ember.save_checkpoint(_state(1), target)
    assert [n for n in os.listdir(tmp_path) if n.startswith(TMP_PREFIX)] == []


def test_the_old_file_keeps_its_data_for_a_reader_that_has_it_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(temporaries, "DISCARD_IN_BACKGROUND", 0)
    target = tmp_path / "last.ckpt"
    ember.save_checkpoint({"w": torch.arange(4096.0)}, target)
    loaded = ember.load_checkpoint(target)["w"]
    ember.save_checkpoint({"w": torch.zeros(4096)}, target)
    temporaries.wait_discards()
    assert torch.equal(loaded, torch.arange(4096.0))


def test_checksums_computed_while_the_data_is_flushed_are_in_the_header(tmp_path, monkeypatch):
    """A store's save writes the bytes, then checksums them while a second thread flushes them (fdatasync):
    the header written last holds every tensor's CRC-32C, and the file verifies."""
    flushed = []
    real = getattr(os, "fdatasync", os.fsync)
    monkeypatch.setattr(os, "fdatasync", lambda fd: (flushed.append(fd), real(fd))[1], raising=False)
    state = {"a": torch.randn(300, 70), "b": torch.arange(10, dtype=torch.int64), "n": 3}
    ember.save_checkpoint(state, tmp_path / "x.ckpt")
    assert flushed, "the data was not flushed while the checksums were computed"
    from ember.checkpoint.format import container

    container.verify_file(tmp_path / "x.ckpt")
    assert torch.equal(ember.load_checkpoint(tmp_path / "x.ckpt")["a"], state["a"])


def test_a_failed_flush_fails_the_save_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    ember.save_checkpoint(_state(0), target)

    def eio(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio, raising=False)
    with pytest.raises(CheckpointError, match="Input/output error"):
        ember.save_checkpoint(_state(1), target)
    monkeypatch.undo()
    assert ember.load_checkpoint(target)["global_step"] == 0
    assert [n for n in os.listdir(tmp_path) if n.startswith(TMP_PREFIX)] == []
