"""Progress bars on long saves and loads: they pass bytes through unchanged and stay off without a terminal."""

from __future__ import annotations

import torch

import ember
from ember.checkpoint.format import codec
from ember.checkpoint import transfer_bars
from ember.checkpoint.writer import write_file


def test_a_save_with_a_progress_bar_writes_the_same_bytes(tmp_path):
    tree, tensors = codec.flatten({"w": torch.arange(1000.0), "n": 3})
    write_file(tmp_path / "a.ckpt", tree, tensors, progress=True)
    write_file(tmp_path / "b.ckpt", tree, tensors, progress=False)
    assert (tmp_path / "a.ckpt").read_bytes() == (tmp_path / "b.ckpt").read_bytes()
    assert torch.equal(ember.load_checkpoint(tmp_path / "a.ckpt")["w"], torch.arange(1000.0))


def test_bars_wait_two_seconds_and_are_off_without_a_terminal():
    bar = transfer_bars._bar(10, "saving x")
    try:
        assert bar.disable  # pytest captures stderr: not a terminal
        assert transfer_bars.DELAY_S == 2.0
    finally:
        bar.close()
