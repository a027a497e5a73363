"""A sharded folder is one save: its rank files are bound to its metadata (save id, header digests),
its chunks cover every element exactly once, its world size and chunk keys agree with its files, and
every reader refuses anything else with a CheckpointError, fast and without large allocations."""

from __future__ import annotations

import json
import os
import shutil
import signal
from contextlib import contextmanager

import pytest
import torch
from test_sharded_hostile import resign, tensor

import ember
from ember.checkpoint.sharded import (
    consolidate,
    load_sharded,
    read_full,
    save_sharded,
    verify_sharded,
)
from ember.cli import main
from ember.cli.folders import folder_header
from ember.errors import CheckpointError

RF = "rank-00000.safetensors"


@contextmanager
def deadline(seconds: int = 10):
    """A reader that hangs (a FIFO) fails the test instead of hanging the suite."""
    def timeout(*_):
        raise TimeoutError(f"still reading after {seconds} s")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def state(value: float) -> dict:
    return {"state_dict": {"a": torch.full((3, 4), value), "b": torch.full((3, 4), -value)}, "epoch": int(value)}


READERS = {
    "verify": verify_sharded,
    "read_full": read_full,
    "load_checkpoint": ember.load_checkpoint,
    "inspect": folder_header,
    "consolidate": lambda p: consolidate(p, p.parent / "out.ckpt"),
    "resume": lambda p: load_sharded({"state_dict": {"a": torch.zeros(3, 4), "b": torch.zeros(3, 4)}}, p),
}


@pytest.fixture
def two_saves(tmp_path):
    save_sharded(state(1.0), tmp_path / "one.ckpt")
    save_sharded(state(2.0), tmp_path / "two.ckpt")
    return tmp_path / "one.ckpt", tmp_path / "two.ckpt"


@pytest.mark.parametrize("reader", list(READERS))
def test_a_rank_file_copied_in_from_another_save_is_refused(two_saves, reader):
    one, two = two_saves
    shutil.copyfile(two / RF, one / RF)  # same size, same keys: only the binding tells them apart
    with deadline(), pytest.raises(CheckpointError, match=f"{RF} .*belongs to another save"):
        READERS[reader](one)


@pytest.mark.parametrize("reader", list(READERS))
def test_a_rank_file_symlinked_from_outside_the_folder_is_refused(two_saves, reader):
    one, two = two_saves
    (one / RF).unlink()
    (one / RF).symlink_to(two / RF)
    with deadline(), pytest.raises(CheckpointError, match=f"{RF} is a link to .* outside the folder"):
        READERS[reader](one)


def test_a_chunk_key_naming_another_tensors_entry_is_refused(two_saves):
    one, _ = two_saves
    resign(one / "metadata.json", lambda obj: tensor(obj, "state_dict.b")["chunks"][0].__setitem__(
        3, tensor(obj, "state_dict.a")["chunks"][0][3]))
    for reader in READERS.values():
        with deadline(), pytest.raises(CheckpointError, match="chunk key 'state_dict.a@0,0' .* tensor 'state_dict.b'"):
            reader(one)


def test_a_rank_file_beyond_the_world_size_is_refused(two_saves):
    one, _ = two_saves
    os.rename(one / RF, one / "rank-00005.safetensors")
    resign(one / "metadata.json", lambda obj: obj["files"][0].__setitem__(0, "rank-00005.safetensors"))
    for reader in READERS.values():
        with deadline(), pytest.raises(CheckpointError, match=r"rank-00005.safetensors .* world_size is 1"):
            reader(one)


def test_a_huge_tensor_shape_is_refused_before_anything_is_allocated(two_saves):
    one, _ = two_saves

    def huge(obj):
        t = tensor(obj, "state_dict.a")
        t["size"] = [2**40, 2**20]
        t["chunks"][0][1] = [2**40, 2**20]
    resign(one / "metadata.json", huge)
    for reader in READERS.values():
        with deadline(), pytest.raises(CheckpointError, match="tensors hold .* bytes, but its rank files hold"):
            reader(one)


def test_consolidate_reports_a_huge_shape_as_one_clean_line(two_saves, capsys):
    one, _ = two_saves
    resign(one / "metadata.json", lambda obj: (tensor(obj, "state_dict.a").__setitem__("size", [2**40, 2**20]),
                                               tensor(obj, "state_dict.a")["chunks"][0].__setitem__(1, [2**40, 2**20])))
    assert main(["ckpt", "consolidate", str(one), str(one.parent / "out.ckpt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ember: error: corrupt sharded checkpoint") and "Traceback" not in err


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("which", ["metadata.json", RF])
def test_a_fifo_in_place_of_a_file_is_refused_without_hanging(two_saves, reader, which):
    one, _ = two_saves
    (one / which).unlink()
    os.mkfifo(one / which)
    with deadline(), pytest.raises(CheckpointError, match=f"{which} is not a regular file"):
        READERS[reader](one)


@pytest.mark.parametrize("which", ["metadata.json", RF])
def test_ls_of_the_parent_folder_lists_a_fifo_folder_with_an_error(two_saves, which, capsys):
    one, _ = two_saves
    (one / which).unlink()
    os.mkfifo(one / which)
    with deadline():
        assert main(["ckpt", "ls", str(one.parent), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["checkpoints"]}
    assert rows["two.ckpt"]["epoch"] == 2
    assert "is not a regular file" in rows["one.ckpt"]["error"]


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("which", ["metadata.json", RF])
def test_a_link_to_dev_zero_is_refused_without_reading_it(two_saves, reader, which):
    one, _ = two_saves
    (one / which).unlink()
    (one / which).symlink_to("/dev/zero")
    with deadline(), pytest.raises(CheckpointError, match=f"{which} is a link to /dev/zero, outside the folder"):
        READERS[reader](one)



def write_rows(folder, rows: list[int], total: int) -> None:
    """A folder whose tensor 'w' of ``total`` rows is stored as one chunk per entry of ``rows``
    (row i filled with i): every metadata check but coverage is satisfied."""
    from ember.checkpoint.sharded import metadata as _meta
    from ember.checkpoint.sharded.layout import chunk_key
    from ember.checkpoint.sharded.rankfile import write_rank_file

    folder.mkdir()
    save_id = "c" * 32
    size, digest = write_rank_file(folder / RF, 0, {chunk_key("w", (r, 0)): torch.full((1, 2), float(r))
                                                    for r in sorted(set(rows))}, save_id)
    chunks = tuple(_meta.Chunk((r, 0), (1, 2), RF, chunk_key("w", (r, 0))) for r in rows)
    meta = _meta.ShardedMeta(1, {RF: size}, {"w": _meta.TensorMeta(torch.float32, (total, 2), chunks)},
                             {"$": "dict", "items": [["w", {"$": "tensor", "name": "w"}]]},
                             save_id=save_id, digests={RF: digest})
    (folder / "metadata.json").write_bytes(_meta.encode(meta))


def test_three_hundred_chunks_with_one_row_twice_and_one_never_are_refused(tmp_path):
    rows = list(range(300))
    rows[7] = 8  # row 8 twice, row 7 never: the volume still adds up
    write_rows(tmp_path / "bad.ckpt", rows, 300)
    for reader in (verify_sharded, read_full):
        with pytest.raises(CheckpointError, match=r"chunks at \[8, 0\] and \[8, 0\] overlap"):
            reader(tmp_path / "bad.ckpt")


def test_three_hundred_chunks_that_tile_the_tensor_read_back_whole(tmp_path):
    write_rows(tmp_path / "good.ckpt", list(reversed(range(300))), 300)
    assert torch.equal(read_full(tmp_path / "good.ckpt")["w"], torch.arange(300.0).repeat_interleave(2).view(300, 2))
