"""`ember ckpt convert`: an ember file to PyTorch Lightning's layout and back, from the command line."""

from __future__ import annotations

import torch

import ember
from ember.cli import main
from tiny import TinyModel, make_loader, trainer_kwargs


def test_convert_to_lightning_and_back_keeps_weights_and_position(tmp_path, capsys):
    trainer = ember.Trainer(max_epochs=2, **trainer_kwargs(tmp_path))
    trainer.fit(TinyModel(), make_loader())
    src = tmp_path / "checkpoints" / "epoch=1-step=8.ckpt"
    assert main(["ckpt", "convert", str(src), str(tmp_path / "l.ckpt"), "--to", "lightning"]) == 0
    exported = ember.load_checkpoint(tmp_path / "l.ckpt")  # a torch.save file, read weights-only
    assert "pytorch-lightning_version" in exported and exported["global_step"] == 8
    assert main(["ckpt", "convert", str(tmp_path / "l.ckpt"), str(tmp_path / "back.ckpt")]) == 0
    back, original = ember.load_checkpoint(tmp_path / "back.ckpt"), ember.load_checkpoint(src)
    assert (back["epoch"], back["global_step"]) == (original["epoch"], original["global_step"])
    for k, v in original["state_dict"].items():
        assert torch.equal(back["state_dict"][k], v)
    assert "wrote" in capsys.readouterr().out


def test_convert_of_a_missing_file_says_so_and_exits_1(tmp_path, capsys):
    assert main(["ckpt", "convert", str(tmp_path / "nope.ckpt"), str(tmp_path / "out.ckpt")]) == 1
    assert "nope.ckpt" in capsys.readouterr().err and not (tmp_path / "out.ckpt").exists()
