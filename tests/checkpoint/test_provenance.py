"""A manager deletes only what proves, in its own header or sharded metadata, that this run wrote it
under that name (checkpoint/provenance.py)."""

from __future__ import annotations

import os

import torch

import ember
from ember.checkpoint.provenance import written_by
from ember.checkpoint.sharded import save_sharded
from ember.checkpoint.storage.local import LocalStorage

RUN, OTHER = "a" * 32, "b" * 32


def state(name):
    return {"state_dict": {"w": torch.ones(2)}, "callbacks": {"ModelCheckpoint": {"lineage": RUN, "name": name}}}


def test_a_file_is_ours_only_under_the_name_and_lineage_it_records(tmp_path):
    ember.save_checkpoint(state("a.ckpt"), tmp_path / "a.ckpt")
    os.link(tmp_path / "a.ckpt", tmp_path / "copy.ckpt")
    store = LocalStorage(tmp_path)
    assert written_by(store, "a.ckpt", RUN)
    assert not written_by(store, "a.ckpt", OTHER)
    assert not written_by(store, "copy.ckpt", RUN)


def test_a_committed_sharded_folder_of_the_lineage_is_ours_and_a_user_folder_is_not(tmp_path):
    save_sharded(state("s.ckpt"), tmp_path / "s.ckpt")
    (tmp_path / "mine.ckpt").mkdir()
    (tmp_path / "mine.ckpt" / "metadata.json").write_text("{}")
    store = LocalStorage(tmp_path)
    assert written_by(store, "s.ckpt", RUN)
    assert not written_by(store, "mine.ckpt", RUN)
    assert not written_by(store, "missing.ckpt", RUN)


def test_a_symlink_to_a_checkpoint_of_the_run_is_not_ours(tmp_path):
    ember.save_checkpoint(state("a.ckpt"), tmp_path / "real.ckpt")
    (tmp_path / "a.ckpt").symlink_to(tmp_path / "real.ckpt")
    assert not written_by(LocalStorage(tmp_path), "a.ckpt", RUN)
