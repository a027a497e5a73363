"""kill -9 at random moments while checkpoints are being saved: the target always holds the old or
the new complete checkpoint, and ckpt_path="last" always resolves to one that verifies."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import forkstart
import torch

import ember
from ember.checkpoint.format import container
from ember.checkpoint.lookup import find_last
from ember.checkpoint.storage.locations import open_store
from ember.checkpoint.storage.local import TMP_PREFIX
from ember.checkpoint.storage.temporaries import wait_discards

JOB = Path(__file__).parent.parent / "jobs" / "save_loop.py"
KILLS = 15


def kill_at_random_moment(folder: Path, rng: random.Random) -> int | None:
    """Run the save loop, SIGKILL it at a random moment; return the last index it reported committed."""
    proc = forkstart.popen([str(JOB), str(folder)], stdout=forkstart.PIPE, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.0, 0.25))
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    saved = [int(line.split()[1]) for line in out.splitlines() if line.startswith("saved ")]
    return saved[-1] if saved else None


def test_target_is_always_old_or_new_and_last_always_verifies(tmp_path):
    rng = random.Random(1130)
    committed = None  # the newest index known to be committed
    for _ in range(KILLS):
        reported = kill_at_random_moment(tmp_path, rng)
        committed = reported if reported is not None else committed
        target = tmp_path / "target.ckpt"
        if committed is None and not target.exists():
            continue
        container.verify_file(target)
        ckpt = ember.load_checkpoint(target)
        i = ckpt["global_step"]
        assert torch.equal(ckpt["w"], torch.full((1 << 20,), float(i)))  # not torn
        # killed after the commit but before "saved" was printed: one newer than reported
        assert committed is None or i in (committed, committed + 1)
        committed = i
        store, name = find_last([open_store(tmp_path)])
        last = store.describe(name)
        container.verify_file(last)
        assert ember.load_checkpoint(last)["global_step"] >= i
    assert committed is not None and committed > KILLS  # saves happened between the kills


def test_no_temporary_file_is_ever_taken_for_a_checkpoint(tmp_path):
    rng = random.Random(7)
    for _ in range(3):
        kill_at_random_moment(tmp_path, rng)
    names = os.listdir(tmp_path)
    assert all(n.endswith(".ckpt") for n in names if not n.startswith(TMP_PREFIX))
    assert all(not n.endswith(".ckpt") for n in names if n.startswith(TMP_PREFIX))
    assert len([n for n in names if n.startswith(TMP_PREFIX)]) <= 1  # each save cleans up dead writers' files


KILL_BETWEEN = Path(__file__).parent.parent / "jobs" / "kill_between_renames.py"


def _killed_inside_a_commit(folder: Path, moment: str) -> list[Path]:
    """Run the job (saves global_step 0, then 1 onto target.ckpt, killed inside the second commit);
    return the temporaries it left."""
    proc = forkstart.popen([str(KILL_BETWEEN), str(folder), moment], stdout=forkstart.PIPE, stderr=forkstart.STDOUT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, out
    return [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_a_kill_before_the_rename_leaves_the_old_checkpoint_at_its_name(tmp_path):
    left = _killed_inside_a_commit(tmp_path, "before")
    target = tmp_path / "target.ckpt"
    container.verify_file(target)
    assert ember.load_checkpoint(target)["global_step"] == 0
    assert len([p for p in left if os.path.samefile(p, target)]) == 1  # the old file's second name
    assert [ember.load_checkpoint(p, mmap=False)["global_step"] for p in left if not os.path.samefile(p, target)] == [1]


def test_a_kill_after_the_rename_leaves_the_new_checkpoint_at_its_name(tmp_path):
    left = _killed_inside_a_commit(tmp_path, "after")
    target = tmp_path / "target.ckpt"
    container.verify_file(target)
    assert ember.load_checkpoint(target)["global_step"] == 1
    assert [ember.load_checkpoint(p, mmap=False)["global_step"] for p in left] == [0]  # the old one, superseded


def test_the_next_save_removes_what_a_kill_inside_a_commit_left(tmp_path):
    _killed_inside_a_commit(tmp_path, "before")
    ember.save_checkpoint({"global_step": 2, "w": torch.zeros(4)}, tmp_path / "target.ckpt")
    wait_discards()  # this save's own old file is removed on a background thread
    assert [p.name for p in tmp_path.iterdir()] == ["target.ckpt"]
    assert ember.load_checkpoint(tmp_path / "target.ckpt")["global_step"] == 2
