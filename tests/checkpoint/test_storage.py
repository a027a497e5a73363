"""Atomic commit: the target holds the old or the new file, never a part; failures clean up."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest

from ember.checkpoint.storage import temporaries
from ember.checkpoint.storage.local import TMP_PREFIX, atomic_link, atomic_write, clean_stale_temp_files
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


def dead_pid():
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def temp_file(folder, tag, pid, age_s=0.0):
    """A temporary file named as a writer with this tag and pid names it, last modified age_s ago."""
    p = folder / f"{TMP_PREFIX}{tag}-{pid}-abcd1234-x.ckpt.part"
    p.write_bytes(b"half")
    if age_s:
        os.utime(p, (time.time() - age_s, time.time() - age_s))
    return p


OTHER_NAMESPACE = "w" + "0" * 12  # the tag of a writer on another machine, container or PID namespace


def test_temporary_files_of_dead_writers_are_cleaned_by_a_later_save(tmp_path):
    stale = temp_file(tmp_path, temporaries.writer_tag(), dead_pid())
    atomic_write(tmp_path / "y.ckpt", write_bytes(b"y"))
    assert not stale.exists()


def test_temporary_files_of_live_writers_are_left_alone(tmp_path):
    live = temp_file(tmp_path, temporaries.writer_tag(), os.getppid())
    assert clean_stale_temp_files(tmp_path) == [] and live.exists()


def test_a_temporary_file_from_another_pid_namespace_survives_cleanup_even_if_its_pid_is_free_here(tmp_path):
    theirs = temp_file(tmp_path, OTHER_NAMESPACE, dead_pid())
    atomic_write(tmp_path / "y.ckpt", write_bytes(b"y"))
    assert theirs.exists()


def test_a_temporary_file_from_another_pid_namespace_is_removed_once_untouched_for_a_day(tmp_path):
    abandoned = temp_file(tmp_path, OTHER_NAMESPACE, 12345, age_s=temporaries.STALE_AFTER_S + 60)
    assert clean_stale_temp_files(tmp_path) == [abandoned]


def test_an_ember_0_1_temporary_file_whose_writer_cannot_be_checked_survives_cleanup(tmp_path):
    old_style = tmp_path / f"{TMP_PREFIX}{dead_pid()}-abcd-x.ckpt.part"  # pid only: which namespace is unknown
    old_style.write_bytes(b"half")
    assert clean_stale_temp_files(tmp_path) == [] and old_style.exists()


def test_the_writer_tag_differs_between_pid_namespaces(monkeypatch):
    mine = temporaries.writer_tag()
    monkeypatch.setattr(temporaries, "_TAG", {})
    monkeypatch.setattr(temporaries, "_pid_namespace", lambda: "pid:[1]")
    assert temporaries.writer_tag() != mine and temporaries.writer_tag().startswith("w")


def test_a_244_character_file_name_saves(tmp_path):
    target = tmp_path / ("e" * 239 + ".ckpt")
    names = []
    atomic_write(target, lambda f: (names.append(os.path.basename(f.name)), f.write(b"data")))
    assert target.read_bytes() == b"data" and len(os.fsencode(names[0])) <= 255


def test_a_long_non_ascii_file_name_gets_a_temporary_name_within_255_bytes(tmp_path):
    name = "é" * 120 + ".ckpt"  # 245 bytes in UTF-8
    tmp = temporaries.temp_name(name)
    assert len(os.fsencode(tmp)) <= 255 and tmp.endswith(temporaries.TMP_SUFFIX)


def test_a_long_target_name_can_be_linked(tmp_path):
    src = tmp_path / "a.ckpt"
    src.write_bytes(b"data")
    atomic_link(src, tmp_path / ("l" * 239 + ".ckpt"))
    assert (tmp_path / ("l" * 239 + ".ckpt")).read_bytes() == b"data"


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


def test_link_of_a_missing_source_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        atomic_link(tmp_path / "missing.ckpt", tmp_path / "last.ckpt")
