"""LocalStorage.cleanup() (run when a fit binds its checkpoint folder): temporaries left by real writers
killed with SIGKILL mid-save -- single-file temporaries and the temporary folders of sharded saves,
anywhere under the root -- are removed; a running writer's are left alone."""

from __future__ import annotations

import os
import signal
import textwrap

import forkstart
import pytest

import ember
from ember.checkpoint.sharded import read_full, save_sharded
from ember.checkpoint.storage.local import LocalStorage
from ember.checkpoint.storage.temporaries import TMP_PREFIX, is_temporary, pid_alive
from tiny import TinyModel, make_loader, trainer_kwargs

# each writer prints "ready" once its temporary exists, then blocks until it is killed
SINGLE_FILE = """
    import sys, time
    from ember.checkpoint.storage.local import LocalStorage
    with LocalStorage(sys.argv[1]).open_write("sub/a.ckpt") as f:
        f.write(b"half a checkpoint")
        f.flush()
        print("ready", flush=True)
        time.sleep(600)
"""
SHARDED = """
    import sys, time
    import torch
    from ember.checkpoint.sharded import commit, save_sharded
    target = sys.argv[1] + "/last.ckpt"
    save_sharded({"state_dict": torch.nn.Linear(2, 2).state_dict(), "global_step": 1}, target)
    def stuck(tmp, target):  # the second save is written and committed; killed before it gets the name
        print("ready", flush=True)
        time.sleep(600)
    commit.publish = stuck
    save_sharded({"state_dict": torch.nn.Linear(2, 2).state_dict(), "global_step": 2}, target)
"""
FALLBACK_GAP = """
    import os, sys, time
    import torch
    from ember.checkpoint.sharded import commit, save_sharded
    target = sys.argv[1] + "/last.ckpt"
    save_sharded({"state_dict": torch.nn.Linear(2, 2).state_dict(), "global_step": 1}, target)
    from ember.checkpoint.storage import renames
    renames.exchange = lambda a, b: False  # a system without renameat2: the fallback publish
    rename = os.rename
    def stuck(a, b):
        if str(b) == target:  # the old checkpoint is already renamed aside; killed before the new one moves in
            print("ready", flush=True)
            time.sleep(600)
        rename(a, b)
    os.rename = stuck
    save_sharded({"state_dict": torch.nn.Linear(2, 2).state_dict(), "global_step": 2}, target)
"""


def start_writer(code: str, root) -> forkstart.Forked:
    p = forkstart.popen(["-c", textwrap.dedent(code), str(root)], stdout=forkstart.PIPE)
    line = p.stdout.readline().strip()
    if line != "ready":
        p.kill()
        pytest.fail(f"the writer did not start: {line!r} (exit {p.wait(timeout=30)})")
    return p


def kill(p: forkstart.Forked) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    p.stdout.close()


def temporaries(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root)
                  for n in dirs + files if is_temporary(n))


@pytest.mark.parametrize("code, leftover_kind", [(SINGLE_FILE, "file"), (SHARDED, "folder")])
def test_a_running_writers_temporary_is_kept_and_removed_once_it_is_killed(tmp_path, code, leftover_kind):
    writer = start_writer(code, tmp_path)
    try:
        [left] = temporaries(tmp_path)
        assert (tmp_path / left).is_dir() == (leftover_kind == "folder")
        assert LocalStorage(tmp_path).cleanup() == [] and temporaries(tmp_path) == [left]  # its writer runs
    finally:
        kill(writer)
    assert not pid_alive(writer.pid)
    assert LocalStorage(tmp_path).cleanup() == [left]
    assert temporaries(tmp_path) == []


def test_cleanup_keeps_the_committed_checkpoints_and_removes_only_dead_writers_temporaries(tmp_path):
    ember.save_checkpoint({"global_step": 1}, tmp_path / "sub" / "a.ckpt")
    live = start_writer(SINGLE_FILE, tmp_path)
    try:
        dead = [start_writer(SINGLE_FILE, tmp_path), start_writer(SHARDED, tmp_path)]  # the same file as `live`
        for p in dead:
            kill(p)
        removed = LocalStorage(tmp_path).cleanup()
        assert len(removed) == 2 and all(any(f"-{p.pid}-" in name for name in removed) for p in dead)
        [kept] = temporaries(tmp_path)
        assert f"-{live.pid}-" in kept
    finally:
        kill(live)
    assert ember.load_checkpoint(tmp_path / "sub" / "a.ckpt")["global_step"] == 1
    assert read_full(tmp_path / "last.ckpt")["global_step"] == 1  # the killed second save never got the name


def test_the_only_copies_left_by_a_kill_inside_the_fallback_publish_are_kept(tmp_path):
    """Killed between the fallback's two renames: nothing at last.ckpt, the old and the new checkpoint
    complete at temporary names. Neither is removed (moved back by hand, docs/FORMAT.md 9.3)."""
    kill(start_writer(FALLBACK_GAP, tmp_path))
    left = temporaries(tmp_path)
    assert not (tmp_path / "last.ckpt").exists() and len(left) == 2
    assert LocalStorage(tmp_path).cleanup() == [] and temporaries(tmp_path) == left
    assert sorted(read_full(tmp_path / name)["global_step"] for name in left) == [1, 2]
    save_sharded({"global_step": 3}, tmp_path / "last.ckpt")  # a checkpoint at the name again
    assert LocalStorage(tmp_path).cleanup() == left and temporaries(tmp_path) == []
    assert read_full(tmp_path / "last.ckpt")["global_step"] == 3


def test_cleanup_of_a_folder_that_does_not_exist_yet_removes_nothing(tmp_path):
    assert LocalStorage(tmp_path / "not-yet").cleanup() == []


def test_a_fit_starting_in_the_folder_removes_what_a_killed_sharded_save_left(tmp_path):
    root = tmp_path / "checkpoints"  # the Trainer's default folder under default_root_dir
    kill(start_writer(SHARDED, root / "sharded"))  # a sub-folder, where the fit's own saves do not clean
    assert [n.startswith(f"sharded/{TMP_PREFIX}") for n in temporaries(root)] == [True]
    trainer = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    trainer.fit(TinyModel(), make_loader())
    assert temporaries(root) == []

