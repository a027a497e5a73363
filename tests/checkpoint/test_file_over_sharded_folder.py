"""A single-file save onto a name that holds a sharded checkpoint folder (``last.ckpt/`` of an FSDP
run, resumed in one process in the same dirpath) replaces the folder; any other folder is refused."""

from __future__ import annotations

import pytest

from ember.checkpoint.storage.local import LocalStorage
from ember.errors import CheckpointError


def _sharded_folder(path):
    path.mkdir()
    (path / "rank-00000.safetensors").write_bytes(b"old shard")
    (path / "metadata.json").write_text("{}")


def test_a_file_saved_over_a_sharded_folder_takes_its_name_and_the_folder_goes(tmp_path):
    _sharded_folder(tmp_path / "last.ckpt")
    with LocalStorage(tmp_path).open_write("last.ckpt") as f:
        f.write(b"new file")
    assert (tmp_path / "last.ckpt").read_bytes() == b"new file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no folder left aside


def test_a_copy_linked_over_a_sharded_folder_replaces_it(tmp_path):
    _sharded_folder(tmp_path / "last.ckpt")
    (tmp_path / "epoch=3.ckpt").write_bytes(b"newest")
    LocalStorage(tmp_path).copy("epoch=3.ckpt", "last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == b"newest"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=3.ckpt", "last.ckpt"]


def test_a_failed_write_leaves_the_sharded_folder_in_place(tmp_path):
    _sharded_folder(tmp_path / "last.ckpt")
    with pytest.raises(RuntimeError, match="stop"):
        with LocalStorage(tmp_path).open_write("last.ckpt") as f:
            f.write(b"half")
            raise RuntimeError("stop")
    assert (tmp_path / "last.ckpt" / "rank-00000.safetensors").read_bytes() == b"old shard"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_folder_that_is_not_a_sharded_checkpoint_is_refused(tmp_path):
    (tmp_path / "last.ckpt").mkdir()
    (tmp_path / "last.ckpt" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"it is a folder \(not a sharded checkpoint\); give a file path"):
        with LocalStorage(tmp_path).open_write("last.ckpt") as f:
            f.write(b"x")
    assert (tmp_path / "last.ckpt" / "notes.txt").read_text() == "mine"
