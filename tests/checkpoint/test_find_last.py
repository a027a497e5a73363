"""``"last"``: the newest full checkpoint, by global step, then modification time, then a ``last*`` name."""

from __future__ import annotations

import os

import torch

import ember
from ember.checkpoint.lookup import find_last
from ember.checkpoint.storage.locations import open_store


def _state(step: int) -> dict:
    return {"global_step": step, "loops": {"fit": {"epoch": 1}}, "state_dict": {"w": torch.zeros(2)}}


def test_a_tie_in_step_and_time_goes_to_the_last_named_file(tmp_path):
    """last.ckpt is a hard link to the newest top-k file (one inode, one mtime): "last" must name last.ckpt,
    as the callback's last_model_path does, whatever the order of the listing."""
    ember.save_checkpoint(_state(8), tmp_path / "epoch=1-step=8.ckpt")
    os.link(tmp_path / "epoch=1-step=8.ckpt", tmp_path / "last.ckpt")
    ember.save_checkpoint(_state(8), tmp_path / "zzz-step=8.ckpt")  # sorts after last.ckpt
    t = os.stat(tmp_path / "last.ckpt").st_mtime
    os.utime(tmp_path / "zzz-step=8.ckpt", (t, t))
    assert find_last([open_store(str(tmp_path))])[1] == "last.ckpt"


def test_a_higher_step_wins_over_the_last_name(tmp_path):
    ember.save_checkpoint(_state(4), tmp_path / "last.ckpt")
    ember.save_checkpoint(_state(8), tmp_path / "epoch=1-step=8.ckpt")
    assert find_last([open_store(str(tmp_path))])[1] == "epoch=1-step=8.ckpt"
