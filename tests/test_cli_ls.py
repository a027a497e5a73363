"""`ember ckpt ls DIR`: one line per checkpoint in a folder, read from headers only."""

import json
import os
import pathlib

import pytest
import torch

import ember
from ember.callbacks import ModelCheckpoint
from ember.cli import main
from tiny import TinyModel, make_loader, trainer_kwargs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A folder written by a real fit: top-2 by val_loss, plus last.ckpt. Tests only read it."""
    root = tmp_path_factory.mktemp("run")
    cb = ModelCheckpoint(dirpath=root / "ckpts", monitor="val_loss", save_top_k=2, save_last=True,
                         filename="{epoch}-{val_loss:.3f}")
    trainer = ember.Trainer(max_epochs=3, callbacks=[cb], **trainer_kwargs(root))
    trainer.fit(TinyModel(), make_loader(), make_loader(shuffle=False))
    return root / "ckpts"


def save(path, step, **state):
    ember.save_checkpoint({"epoch": 0, "global_step": step, "state_dict": {"w": torch.ones(2)}, **state}, path)
    return path


def ls_json(capsys, folder, *flags):
    code = main(["ckpt", "ls", str(folder), "--json", *flags])
    return code, json.loads(capsys.readouterr().out)


def rows(capsys, folder, *flags):
    code = main(["ckpt", "ls", str(folder), *flags])
    return code, capsys.readouterr().out.splitlines()


def test_ls_prints_each_checkpoint_with_epoch_step_and_metric(run_dir, capsys):
    code, doc = ls_json(capsys, run_dir)
    assert code == 0
    by_name = {c["name"]: c for c in doc["checkpoints"]}
    assert set(by_name) == {p.name for p in run_dir.glob("*.ckpt")} and "last.ckpt" in by_name
    for name, c in by_name.items():
        saved = ember.load_checkpoint(run_dir / name)
        assert (c["epoch"], c["global_step"]) == (saved["epoch"], saved["global_step"])
        assert c["monitor"] == "val_loss"
    top = next(c for n, c in by_name.items() if n != "last.ckpt")
    assert f"{top['score']:.3f}" in top["name"]  # the score of that very file


def test_ls_human_output_has_one_line_per_checkpoint(run_dir, capsys):
    code, lines = rows(capsys, run_dir)
    assert code == 0
    assert lines[0].split() == ["NAME", "EPOCH", "STEP", "METRIC", "SIZE", "MODIFIED"]
    assert len(lines) == 1 + len(list(run_dir.glob("*.ckpt")))
    last = next(line for line in lines if line.startswith("last.ckpt"))
    assert "val_loss=" in last and "KiB" in last


def test_ls_sorts_by_step_then_modification_time(tmp_path, capsys):
    for name, step, mtime in (("c.ckpt", 5, 100), ("a.ckpt", 9, 50), ("b.ckpt", 5, 10), ("d.ckpt", 1, 500)):
        os.utime(save(tmp_path / name, step), (mtime, mtime))
    _, doc = ls_json(capsys, tmp_path)
    assert [c["name"] for c in doc["checkpoints"]] == ["d.ckpt", "b.ckpt", "c.ckpt", "a.ckpt"]


def test_ls_skips_temporary_files_and_other_entries(tmp_path, capsys):
    save(tmp_path / "a.ckpt", 1)
    (tmp_path / ".ember-tmp-123-abc.ckpt.part").write_bytes(b"half")
    (tmp_path / ".ember-tmp-x.ckpt").write_bytes(b"half")
    (tmp_path / "metrics.csv").write_text("step,loss\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "plain.ckpt").mkdir()  # a folder without metadata is not a checkpoint (yet)
    _, doc = ls_json(capsys, tmp_path)
    assert [c["name"] for c in doc["checkpoints"]] == ["a.ckpt"]


def test_ls_lists_a_checkpoint_folder_that_has_metadata(tmp_path, capsys):
    from ember.checkpoint.sharded import save_sharded

    save_sharded({"epoch": 0, "global_step": 3, "state_dict": {"w": torch.ones(2)}}, tmp_path / "sharded.ckpt")
    size = sum(p.stat().st_size for p in (tmp_path / "sharded.ckpt").iterdir())
    _, doc = ls_json(capsys, tmp_path)
    [entry] = doc["checkpoints"]
    assert (entry["name"], entry["kind"], entry["size"], entry["global_step"]) == ("sharded.ckpt", "folder", size, 3)


def test_ls_marks_a_checkpoint_folder_without_metadata_incomplete(tmp_path, capsys):
    folder = tmp_path / "sharded.ckpt"
    folder.mkdir()
    (folder / "rank-00000.safetensors").write_bytes(b"x" * 10)
    _, doc = ls_json(capsys, tmp_path)
    [entry] = doc["checkpoints"]
    assert (entry["name"], entry["kind"], entry["size"]) == ("sharded.ckpt", "folder", 10)
    assert "incomplete, not a checkpoint" in entry["error"]


def test_ls_shows_a_corrupt_file_instead_of_failing(tmp_path, capsys):
    save(tmp_path / "good.ckpt", 1)
    bad = save(tmp_path / "bad.ckpt", 2)
    data = bytearray(bad.read_bytes())
    data[60] ^= 0x01  # inside the header: its checksum no longer matches
    bad.write_bytes(bytes(data))
    (tmp_path / "junk.ckpt").write_bytes(b"hello")
    code, lines = rows(capsys, tmp_path)
    assert code == 0
    assert "unreadable: corrupt checkpoint" in next(line for line in lines if line.startswith("bad.ckpt"))
    assert "unreadable: not a checkpoint" in next(line for line in lines if line.startswith("junk.ckpt"))


def test_ls_verify_says_ok_or_why_and_exits_1_on_a_bad_file(tmp_path, capsys):
    save(tmp_path / "good.ckpt", 1)
    bad = save(tmp_path / "bad.ckpt", 2)
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0x10  # in the tensor bytes: only a full read finds it
    bad.write_bytes(bytes(data))
    code, lines = rows(capsys, tmp_path, "--verify")
    assert code == 1
    assert lines[0].split()[-1] == "STATUS"
    assert lines[1].startswith("good.ckpt") and lines[1].endswith("  OK")
    assert lines[2].startswith("bad.ckpt") and "FAILED: " in lines[2] and "CRC-32" in lines[2]


def test_ls_verify_of_good_files_exits_0(run_dir, capsys):
    code, doc = ls_json(capsys, run_dir, "--verify")
    assert code == 0 and doc["ok"] is True
    assert all(c["verified"]["ok"] for c in doc["checkpoints"])


def test_ls_json_is_one_document_for_scripts(tmp_path, capsys):
    save(tmp_path / "a.ckpt", 7)
    code, doc = ls_json(capsys, tmp_path)
    assert code == 0 and doc["folder"] == str(tmp_path) and doc["ok"] is True
    [c] = doc["checkpoints"]
    assert c["path"] == str(tmp_path / "a.ckpt") and c["size"] == (tmp_path / "a.ckpt").stat().st_size
    assert c["mtime"] == (tmp_path / "a.ckpt").stat().st_mtime and c["modified"].endswith("+00:00")
    assert (c["monitor"], c["score"]) == (None, None)


def test_ls_metric_uses_current_score(tmp_path, capsys):
    cb = {"ModelCheckpoint{'monitor': 'val_acc'}": {"monitor": "val_acc", "current_score": 0.75,
                                                   "best_k_models": {}}}
    save(tmp_path / "last.ckpt", 3, callbacks=cb)
    _, doc = ls_json(capsys, tmp_path)
    assert (doc["checkpoints"][0]["monitor"], doc["checkpoints"][0]["score"]) == ("val_acc", 0.75)


def test_ls_metric_falls_back_to_the_files_own_entry_in_best_k_models(tmp_path, capsys):
    cb = {"ModelCheckpoint{'monitor': 'val_acc'}": {"monitor": "val_acc", "best_k_models": {
        "/run/elsewhere/epoch=1.ckpt": 0.5, "/run/elsewhere/epoch=2.ckpt": 0.9}}}  # the folder was moved
    save(tmp_path / "epoch=2.ckpt", 3, callbacks=cb)
    code, lines = rows(capsys, tmp_path)
    assert "val_acc=0.9 " in lines[1]


def test_ls_abbreviates_an_int_too_long_for_str(tmp_path, capsys):
    ember.save_checkpoint({"epoch": 10**5000, "global_step": 2}, tmp_path / "a.ckpt")
    code, lines = rows(capsys, tmp_path)
    assert code == 0 and "(an integer of about 5001 digits)" in lines[1]


def test_ls_escapes_control_characters_in_names(tmp_path, capsys):
    save(tmp_path / "\x1b[2Jx.ckpt", 1)
    code, lines = rows(capsys, tmp_path)
    assert lines[1].startswith("\\x1b[2Jx.ckpt") and "\x1b" not in "".join(lines)


def test_ls_of_an_empty_folder_says_so(tmp_path, capsys):
    assert rows(capsys, tmp_path) == (0, [f"no checkpoints in {tmp_path}"])


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_ls_of_something_that_is_not_a_folder_exits_2(tmp_path, kind, capsys):
    path = tmp_path / "x"
    if kind == "file":
        save(path, 1)
    assert main(["ckpt", "ls", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"no folder at {path}: " in err and ("does not exist" if kind == "missing" else "ember ckpt inspect") in err


def test_ls_reads_only_headers(tmp_path, monkeypatch, capsys):
    from ember.checkpoint.format import container

    save(tmp_path / "a.ckpt", 1)
    monkeypatch.setattr(container, "read", lambda *a, **k: pytest.fail("ls read the tensors"))
    monkeypatch.setattr(container, "verify_file", lambda *a, **k: pytest.fail("ls read the tensors"))
    assert rows(capsys, tmp_path)[0] == 0


def test_ls_path_in_json_is_exact(tmp_path, capsys):
    save(tmp_path / "\x1b.ckpt", 1)
    _, doc = ls_json(capsys, tmp_path)
    assert doc["checkpoints"][0]["name"] == "\x1b.ckpt"
    assert pathlib.Path(doc["checkpoints"][0]["path"]).exists()
