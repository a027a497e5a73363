"""The verified zero-copy load: a local checkpoint is mapped copy-on-write, checked, and its tensors view
the mapping. Its safety: damage is still refused, later changes to the file never reach loaded tensors,
writes to loaded tensors never reach the file."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.checkpoint.format import container
from ember.checkpoint.io import load_checkpoint, save_checkpoint
from ember.checkpoint.format.mapping import views_a_file
from ember.errors import CheckpointCorruptError


def _state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(64, 64, generator=g), "b": torch.randn(64, generator=g), "step": 7}


def _saved(tmp_path, seed: int = 0) -> tuple[str, dict]:
    state = _state(seed)
    path = str(tmp_path / "a.ckpt")
    save_checkpoint(state, path)
    return path, state


def test_a_local_load_hands_out_views_of_the_mapped_file(tmp_path):
    path, state = _saved(tmp_path)
    ckpt = load_checkpoint(path)
    assert views_a_file(ckpt["w"])
    assert torch.equal(ckpt["w"], state["w"])


def test_small_tensors_are_copied_out_so_they_never_pin_the_file(tmp_path):
    path, state = _saved(tmp_path)
    ckpt = load_checkpoint(path)
    assert not views_a_file(ckpt["b"])  # 256 bytes
    assert torch.equal(ckpt["b"], state["b"])


def test_mmap_false_reads_into_memory_of_its_own(tmp_path):
    path, state = _saved(tmp_path)
    ckpt = load_checkpoint(path, mmap=False)
    assert not views_a_file(ckpt["w"])
    assert torch.equal(ckpt["w"], state["w"])


@pytest.mark.parametrize("mmap", [None, False])
def test_a_corrupted_byte_is_refused_before_anything_is_returned(tmp_path, mmap):
    path, _ = _saved(tmp_path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # the middle of 'w', the file's last tensor ('b' sorts first)
        f.seek(size - 64 * 64 * 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(CheckpointCorruptError, match=r"tensor 'w' .* fails its CRC-32C check"):
        load_checkpoint(path, mmap=mmap)


def test_loaded_tensors_stay_as_loaded_after_the_file_is_deleted(tmp_path):
    path, state = _saved(tmp_path)
    ckpt = load_checkpoint(path)
    os.remove(path)
    assert torch.equal(ckpt["w"], state["w"])


def test_loaded_tensors_stay_as_loaded_after_a_later_save_replaces_the_file(tmp_path):
    path, state = _saved(tmp_path)
    ckpt = load_checkpoint(path)
    newer = _state(seed=1)
    save_checkpoint(newer, path)
    assert torch.equal(ckpt["w"], state["w"])
    assert torch.equal(load_checkpoint(path)["w"], newer["w"])


def test_writes_to_a_loaded_tensor_never_reach_the_file(tmp_path):
    path, state = _saved(tmp_path)
    before = open(path, "rb").read()
    ckpt = load_checkpoint(path)
    ckpt["w"].add_(1.0)
    assert torch.equal(ckpt["w"], state["w"] + 1.0)
    assert open(path, "rb").read() == before
    container.verify_file(path)
    assert torch.equal(load_checkpoint(path)["w"], state["w"])


class _Wide(ember.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(32, 64)

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def test_a_resumed_optimizer_owns_its_state_instead_of_viewing_the_file(tmp_path):
    data = DataLoader(TensorDataset(torch.randn(8, 32)), batch_size=4)
    kw = dict(default_root_dir=str(tmp_path), enable_progress_bar=False, logger=False, max_epochs=1)
    ember.Trainer(**kw).fit(_Wide(), data)
    path = str(tmp_path / "checkpoints" / "epoch=0-step=2.ckpt")
    assert views_a_file(load_checkpoint(path)["optimizer_states"][0]["state"][0]["exp_avg"])
    trainer = ember.Trainer(**{**kw, "max_epochs": 2})
    trainer.fit(_Wide(), data, ckpt_path=path)
    states = [v for s in trainer.optimizers[0].state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    assert states and not any(views_a_file(v) for v in states)


def test_a_sharded_folder_read_whole_hands_out_views_that_outlive_its_replacement(tmp_path):
    from ember.checkpoint.sharded import read_full, save_sharded
    from ember.checkpoint.storage.temporaries import wait_discards

    folder = tmp_path / "last.ckpt"
    save_sharded({"state_dict": {"w": torch.arange(4096.0)}, "global_step": 1}, folder)
    loaded = read_full(folder)["state_dict"]["w"]
    assert views_a_file(loaded)
    save_sharded({"state_dict": {"w": torch.zeros(4096)}, "global_step": 2}, folder)
    wait_discards()
    assert torch.equal(loaded, torch.arange(4096.0))
    assert torch.equal(read_full(folder)["state_dict"]["w"], torch.zeros(4096))
