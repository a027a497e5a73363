"""Atomic commit: the target holds the old or the new file, never a part; failures clean up."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from ember.checkpoint.storage import TMP_PREFIX, atomic_link, atomic_write, clean_stale_temp_files
from ember.errors import CheckpointError


def write_bytes(data):
    return lambda f: f.write(data)


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_write_creates_the_file_and_its_folder(tmp_path):
    target = tmp_path / "a" / "b" / "x.ckpt"
    atomic_write(target, write_bytes(b"new"))
    assert target.read_bytes() == b"new" and leftovers(target.parent) == []


def test_write_replaces_the_old_file(tmp_path):
    target = tmp_path / "x.ckpt"
    target.write_bytes(b"old")
    atomic_write(target, write_bytes(b"new"))
    assert target.read_bytes() == b"new"


def test_enospc_mid_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "x.ckpt"
    target.write_bytes(b"old")

    def fails_half_way(f):
        f.write(b"partial data")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointError, match="no space left on the device while saving .*x.ckpt"):
        atomic_write(target, fails_half_way)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_eio_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.ckpt"
    target.write_bytes(b"old")

    def eio(f):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(CheckpointError, match="could not save"):
        atomic_write(target, eio)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_an_exception_in_the_writer_propagates_and_cleans_up(tmp_path):
    target = tmp_path / "x.ckpt"

    def boom(f):
        f.write(b"x")
        raise ValueError("encoder failed")

    with pytest.raises(ValueError, match="encoder failed"):
        atomic_write(target, boom)
    assert not target.exists() and leftovers(tmp_path) == []


def test_saving_to_a_folder_is_explained(tmp_path):
    with pytest.raises(CheckpointError, match="it is a folder"):
        atomic_write(tmp_path, write_bytes(b""))


def test_temporary_files_of_dead_writers_are_cleaned_by_a_later_save(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{TMP_PREFIX}{int(dead.stdout)}-abcd-x.ckpt.part"
    stale.write_bytes(b"half")
    atomic_write(tmp_path / "y.ckpt", write_bytes(b"y"))
    assert not stale.exists()


def test_temporary_files_of_live_writers_are_left_alone(tmp_path):
    live = tmp_path / f"{TMP_PREFIX}{os.getppid()}-abcd-x.ckpt.part"
    live.write_bytes(b"in progress")
    assert clean_stale_temp_files(tmp_path) == [] and live.exists()


def test_temporary_files_never_end_in_ckpt(tmp_path):
    seen = []
    atomic_write(tmp_path / "x.ckpt", lambda f: seen.append(os.path.basename(f.name)))
    assert seen[0].startswith(TMP_PREFIX) and not seen[0].endswith(".ckpt")


def test_link_gives_a_second_real_file(tmp_path):
    src = tmp_path / "a.ckpt"
    src.write_bytes(b"data")
    atomic_link(src, tmp_path / "last.ckpt")
    src.unlink()
    assert (tmp_path / "last.ckpt").read_bytes() == b"data"
    assert not (tmp_path / "last.ckpt").is_symlink()
