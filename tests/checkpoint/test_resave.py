"""Re-saving a name: the old file gets a temporary second name before the rename and is removed after
it, in the background when it is big (so the rename does not free its blocks on the caller's thread)."""

from __future__ import annotations

import os

import torch

import ember
from ember.checkpoint.storage import temporaries
from ember.checkpoint.storage.local import TMP_PREFIX


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
