"""Sharded folders in `ember ckpt ls | inspect | verify | consolidate`, in `ckpt_path="last"` lookup
and in `ckpt_path=FOLDER`: a committed folder is a checkpoint, one without metadata never is."""

from __future__ import annotations

import json

import pytest
import torch

import ember
from ember.checkpoint.lookup import find_last
from ember.checkpoint.resume import Place, locate
from ember.checkpoint.sharded import save_sharded
from ember.checkpoint.storage.locations import open_store
from ember.cli import main
from ember.errors import CheckpointError


def state(step: int) -> dict:
    return {"state_dict": {"w": torch.full((3,), float(step))}, "epoch": 0, "global_step": step,
            "loops": {"fit": {"epoch": 0}}}


@pytest.fixture
def folder(tmp_path):
    save_sharded(state(5), tmp_path / "good.ckpt")
    save_sharded(state(9), tmp_path / "cut.ckpt")
    (tmp_path / "cut.ckpt" / "metadata.json").unlink()  # as a save killed before its commit leaves it
    return tmp_path


def test_ls_lists_a_committed_folder_and_marks_an_incomplete_one(folder, capsys):
    assert main(["ckpt", "ls", str(folder), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["checkpoints"]}
    assert rows["good.ckpt"]["global_step"] == 5 and "error" not in rows["good.ckpt"]
    assert rows["cut.ckpt"]["global_step"] is None
    assert "incomplete, not a checkpoint" in rows["cut.ckpt"]["error"]


def test_verify_passes_a_committed_folder_and_fails_an_incomplete_one(folder, capsys):
    assert main(["ckpt", "verify", str(folder / "good.ckpt")]) == 0
    assert main(["ckpt", "verify", str(folder / "cut.ckpt")]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_inspect_summarises_a_folder(folder, capsys):
    assert main(["ckpt", "inspect", str(folder / "good.ckpt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "ember-sharded" and info["global_step"] == 5 and info["ranks"] == 1
    assert info["checksums"]["status"] == "ok" and info["tensor_count"] == 1


def test_consolidate_writes_one_file(folder, capsys):
    assert main(["ckpt", "consolidate", str(folder / "good.ckpt"), str(folder / "one.ckpt")]) == 0
    assert torch.equal(ember.load_checkpoint(folder / "one.ckpt")["state_dict"]["w"], torch.full((3,), 5.0))
    assert main(["ckpt", "consolidate", str(folder / "cut.ckpt"), str(folder / "two.ckpt")]) == 1
    assert not (folder / "two.ckpt").exists()


def test_last_skips_an_incomplete_newer_folder(folder):
    assert find_last([open_store(folder)])[1] == "good.ckpt"


def test_last_prefers_a_newer_committed_folder_over_an_older_file(folder):
    ember.save_checkpoint(state(7), folder / "file.ckpt")
    assert find_last([open_store(folder)])[1] == "file.ckpt"
    save_sharded(state(8), folder / "newer.ckpt")
    assert find_last([open_store(folder)])[1] == "newer.ckpt"


def test_last_skips_a_folder_with_damaged_metadata(folder):
    save_sharded(state(8), folder / "newer.ckpt")
    meta = folder / "newer.ckpt" / "metadata.json"
    meta.write_bytes(meta.read_bytes().replace(b'"global_step",8', b'"global_step",9'))
    with pytest.warns(UserWarning, match="newer.ckpt.*CRC-32C"):
        assert find_last([open_store(folder)])[1] == "good.ckpt"


def test_ckpt_path_accepts_a_committed_folder_only(folder):
    assert locate(str(folder / "good.ckpt"), Place([], str(folder), str(folder))) == str(folder / "good.ckpt")
    with pytest.raises(CheckpointError, match="it is a folder, not a checkpoint"):
        locate(str(folder / "cut.ckpt"), Place([], str(folder), str(folder)))


def test_a_fit_resumes_from_a_sharded_folder_found_as_last(tmp_path):
    """A plain (single-process) fit given ckpt_path="last" resumes from a committed sharded folder
    saved from a finished run's checkpoint dict."""
    from tiny import TinyModel, make_loader, trainer_kwargs

    first = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    first.fit(TinyModel(), make_loader())
    [written] = sorted(tmp_path.rglob("*.ckpt"))
    full = ember.load_checkpoint(written)
    save_sharded(full, tmp_path / "sharded" / "epoch1.ckpt")
    trainer = ember.Trainer(max_epochs=2, **trainer_kwargs(tmp_path / "second"))
    found = locate("last", Place([], str(tmp_path / "sharded"), str(tmp_path)))
    assert found == str(tmp_path / "sharded" / "epoch1.ckpt")
    trainer.fit(TinyModel(), make_loader(), ckpt_path=found)
    assert trainer.current_epoch == 2 and trainer.global_step == 2 * first.global_step
