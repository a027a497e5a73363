"""The README as a tested document: its Python blocks run as written, and its sample command output has the
rows and columns the commands print today.

Python blocks run in order, in one fresh process, in an empty folder (a session: later blocks use the names
earlier ones define). A block preceded by ``<!-- readme: own script -->`` runs alone as ``python script.py``
(the DDP example starts its own second process). The S3 block runs against the test suite's local S3 server,
with the bucket it names created first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import forkstart
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- readme: own script -->\s*)?^( *)```(\w+)\n(.*?)^\2```", re.S | re.M)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _blocks(lang: str) -> list[tuple[bool, str]]:
    out = []
    for m in BLOCK.finditer(README.read_text()):
        if m.group(3) == lang:
            indent = len(m.group(2))
            out.append((bool(m.group(1)), "\n".join(line[indent:] for line in m.group(4).splitlines())))
    return out


def _run(args, cwd, env=None, timeout=240):
    """``python *args`` as a user runs it (forked from a warm server with torch and ember imported: forkstart.py)."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return forkstart.run(args, cwd=cwd, env=env, timeout=timeout)


def test_the_readme_python_session_runs_as_written(tmp_path, s3_env):
    pytest.importorskip("s3fs")
    import s3fs

    session = "\n\n".join(code for own, code in _blocks("python") if not own)
    for bucket in set(re.findall(r"s3://([\w.-]+)/", session)):
        s3fs.S3FileSystem().mkdir(bucket)
    (tmp_path / "readme_session.py").write_text(session)
    done = _run(["readme_session.py"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_each_readme_script_runs_alone(tmp_path):
    scripts = [code for own, code in _blocks("python") if own]
    assert scripts, "the README has no stand-alone script block"
    for i, code in enumerate(scripts):
        (tmp_path / f"script{i}.py").write_text(code)
        done = _run([f"script{i}.py"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]


def _labels(text: str) -> list[str]:
    """The first column of each line (what a row is), without the values that vary from run to run."""
    return [re.split(r"\s{2,}", line.strip())[0] for line in text.splitlines() if line.strip()]


def _samples() -> dict[str, str]:
    """``ember ckpt <verb>`` -> the output the README shows for it (the lines after the ``$`` line)."""
    out = {}
    for _, block in _blocks("text"):
        for m in re.finditer(r"^\$ ember ckpt (\w+) .*?\n(.*?)(?=^\$|\Z)", block, re.S | re.M):
            out.setdefault(m.group(1), m.group(2))
    return out


def test_the_readme_sample_output_of_inspect_and_ls_has_the_rows_the_commands_print(tmp_path):
    import ember
    from tiny import TinyModel, make_loader, trainer_kwargs
    from ember.callbacks import ModelCheckpoint

    cb = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val_loss", save_top_k=2, save_last=True,
                         filename="{epoch}-{val_loss:.3f}")
    ember.Trainer(max_epochs=3, callbacks=[cb], **trainer_kwargs(tmp_path)).fit(
        TinyModel(), make_loader(), make_loader(shuffle=False))
    samples = _samples()
    inspect = _run(["-m", "ember.cli", "ckpt", "inspect", cb.last_model_path], tmp_path)
    assert inspect.returncode == 0, inspect.stderr
    shown = [label for label in _labels(samples["inspect"]) if label not in _HPARAMS]
    printed = iter(_labels(inspect.stdout))
    assert all(label in printed for label in shown), (shown, inspect.stdout)  # in the same order
    listing = _run(["-m", "ember.cli", "ckpt", "ls", str(tmp_path / "checkpoints")], tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split("\n")[0].split() == samples["ls"].split("\n")[0].split()


_HPARAMS = {"hidden", "lr", "dropout"}  # the demo's hyperparameters in the README's sample (not the tiny model's)
