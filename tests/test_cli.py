"""`ember ckpt inspect` and `ember ckpt verify`, run in-process."""

import json
import os
import pathlib
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

import ember
from ember.checkpoint.format import codec, container
from ember.cli import main


def write_ckpt(path):
    model = torch.nn.Sequential(OrderedDict(l1=torch.nn.Linear(3, 4)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {
        "state_dict": model.state_dict(),
        "optimizer_states": [opt.state_dict()],
        "epoch": 7,
        "global_step": 1234,
        "hyper_parameters": {"lr": 0.1, "hidden": 4},
        "callbacks": {"ModelCheckpoint": {"best": 0.5}, "EarlyStopping": {"wait": 1}},
        "scaler": torch.ones(1, dtype=torch.float16),
    }
    with open(path, "wb") as f:
        container.write(f, *codec.flatten(state))
    return str(path)


def corrupt(path):
    data = bytearray(pathlib.Path(path).read_bytes())
    data[-1] ^= 0x10
    pathlib.Path(path).write_bytes(bytes(data))


def test_inspect_prints_the_facts(tmp_path, capsys):
    path = write_ckpt(tmp_path / "a.ckpt")
    assert main(["ckpt", "inspect", path]) == 0
    out = capsys.readouterr().out
    for fact in ("format 1", "epoch        7", "global step  1234", "weights    2 tensors, 64 B", "float16",
                 "float32", "lr", "hidden", "ModelCheckpoint, EarlyStopping", "verified OK"):  # fmt: skip
        assert fact in out, fact
    assert "optimizer  2 tensors, 64 B" in out  # SGD momentum buffers, one per parameter


def test_inspect_tensors_lists_every_tensor(tmp_path, capsys):
    path = write_ckpt(tmp_path / "a.ckpt")
    assert main(["ckpt", "inspect", path, "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "state_dict.l1.weight  (4, 3)  float32" in out
    assert "scaler  (1,)  float16" in out


def test_inspect_json_is_one_parseable_document(tmp_path, capsys):
    path = write_ckpt(tmp_path / "a.ckpt")
    assert main(["ckpt", "inspect", path, "--json", "--tensors"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["format_version"], doc["epoch"], doc["global_step"]) == (1, 7, 1234)
    assert doc["parts"]["weights"] == {"count": 2, "bytes": 64}
    assert doc["hyper_parameters"] == {"lr": 0.1, "hidden": 4}
    assert doc["callbacks"] == ["ModelCheckpoint", "EarlyStopping"]
    assert doc["checksums"]["status"] == "ok"
    assert {t["name"] for t in doc["tensors"]} >= {"state_dict.l1.weight", "state_dict.l1.bias"}


def test_inspect_reports_failed_checksum(tmp_path, capsys):
    path = write_ckpt(tmp_path / "a.ckpt")
    corrupt(path)
    assert main(["ckpt", "inspect", path]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "CRC-32" in out


def test_inspect_torch_save_file_says_what_it_is(tmp_path, capsys):
    path = tmp_path / "t.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 2}, path)
    assert main(["ckpt", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "torch.save file" in out and "weights-only" in out and "epoch        2" in out


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_inspect_refuses_unsafe_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"x": _RunsCode(marker)}, path)
    assert main(["ckpt", "inspect", str(path)]) == 1
    assert "refused as unsafe" in capsys.readouterr().out
    assert not marker.exists()


def test_inspect_plain_safetensors_has_no_checksums(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(2)}, path)
    assert main(["ckpt", "inspect", str(path)]) == 0
    assert "plain safetensors" in capsys.readouterr().out


def test_verify_good_files_exits_0(tmp_path, capsys):
    a, b = write_ckpt(tmp_path / "a.ckpt"), write_ckpt(tmp_path / "b.ckpt")
    assert main(["ckpt", "verify", a, b]) == 0
    assert capsys.readouterr().out.splitlines() == [f"OK  {a}", f"OK  {b}"]


def test_verify_names_the_corrupted_file_and_exits_1(tmp_path, capsys):
    good, bad = write_ckpt(tmp_path / "good.ckpt"), write_ckpt(tmp_path / "bad.ckpt")
    corrupt(bad)
    assert main(["ckpt", "verify", good, bad]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"OK  {good}"
    assert lines[1].startswith(f"FAIL {bad}: ") and "CRC-32" in lines[1]


def test_verify_json_reports_each_file(tmp_path, capsys):
    good, bad = write_ckpt(tmp_path / "good.ckpt"), write_ckpt(tmp_path / "bad.ckpt")
    corrupt(bad)
    assert main(["ckpt", "verify", good, bad, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert [(f["path"], f["ok"]) for f in doc["files"]] == [(good, True), (bad, False)]


@pytest.mark.parametrize("kind", ["missing", "torch", "safetensors", "truncated"])
def test_verify_fails_files_it_cannot_verify(tmp_path, capsys, kind):
    path = tmp_path / "x"
    if kind == "torch":
        torch.save({"w": torch.ones(1)}, path)
    elif kind == "safetensors":
        save_file({"w": torch.ones(1)}, path)
    elif kind == "truncated":
        write_ckpt(path)
        path.write_bytes(path.read_bytes()[:-5])
    assert main(["ckpt", "verify", str(path)]) == 1
    assert capsys.readouterr().out.startswith(f"FAIL {path}: ")


@pytest.mark.parametrize("argv", [[], ["ckpt"], ["ckpt", "verify"], ["ckpt", "inspect"], ["bogus"],
                                  ["ckpt", "inspect", "a", "--nope"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2


def test_inspect_abbreviates_an_int_too_long_for_str(tmp_path, capsys):
    path = tmp_path / "big.ckpt"
    ember.save_checkpoint({"epoch": 10**5000, "global_step": 3}, path)  # ember writes it, so it must show it
    assert main(["ckpt", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "epoch        0x" in out and "(an integer of about 5001 digits)" in out
    assert "global step  3" in out


def test_inspect_json_gives_an_int_too_long_for_decimal_as_exact_hex(tmp_path, capsys):
    path = tmp_path / "big.ckpt"
    ember.save_checkpoint({"epoch": -(10**5000)}, path)
    assert main(["ckpt", "inspect", str(path), "--json"]) == 0
    assert int(json.loads(capsys.readouterr().out)["epoch"], 16) == -(10**5000)


def test_inspect_escapes_control_characters_in_tensor_names(tmp_path, capsys):
    path = tmp_path / "a.ckpt"
    ember.save_checkpoint({"state_dict": {"\x1b[2Jw\u202e": torch.ones(1)}}, path)
    assert main(["ckpt", "inspect", str(path), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "state_dict.\\x1b[2Jw\\u202e  (1,)" in out
    assert "\x1b" not in out and "\u202e" not in out


def test_inspect_escapes_control_characters_in_hparams_and_keys(tmp_path, capsys):
    path = tmp_path / "a.ckpt"
    ember.save_checkpoint({"hyper_parameters": {"\x1b]0;k\x07": "\x1b[31mv"}, "\x9bkey": 1}, path)
    assert main(["ckpt", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\\x1b]0;k\\x07" in out and "\\x9bkey" in out
    assert not any(c in out for c in "\x1b\x07\x9b")


def test_inspect_json_keeps_names_exact(tmp_path, capsys):
    path = tmp_path / "a.ckpt"
    ember.save_checkpoint({"state_dict": {"\x1b[2Jw": torch.ones(1)}}, path)
    assert main(["ckpt", "inspect", str(path), "--json", "--tensors"]) == 0
    assert [t["name"] for t in json.loads(capsys.readouterr().out)["tensors"]] == ["state_dict.\x1b[2Jw"]


def test_verify_escapes_control_characters_in_file_names(tmp_path, capsys):
    path = tmp_path / "\x1b[2J.ckpt"
    path.write_bytes(b"not a checkpoint")
    assert main(["ckpt", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"FAIL {tmp_path}/\\x1b[2J.ckpt: ") and "\x1b" not in out


@pytest.mark.parametrize("argv", [["ckpt", "inspect"], ["ckpt", "verify"]])
def test_an_unexpected_error_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, argv):
    path = write_ckpt(tmp_path / "a.ckpt")
    monkeypatch.setattr(container, "verify_file", lambda p: {}["missing"])  # stands for a bug a file triggers
    assert main([*argv, path]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "unexpected KeyError" in line]
    assert len(lines) == 1 and f"{path}: unexpected KeyError while reading it" in lines[0]


def test_traceback_option_lets_an_unexpected_error_through(tmp_path, monkeypatch):
    path = write_ckpt(tmp_path / "a.ckpt")
    monkeypatch.setattr(container, "verify_file", lambda p: {}["missing"])
    with pytest.raises(KeyError):
        main(["--traceback", "ckpt", "verify", path])


def test_help_names_every_ckpt_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "ember ckpt inspect PATH" in out and "ember ckpt verify PATH" in out and "ember ckpt ls DIR" in out
