"""The storage contract (store.py), clause by clause, for every backend in storage_backends.BACKENDS."""

from __future__ import annotations

import pytest

from storage_backends import BACKENDS


class Boom(Exception):
    pass


@pytest.fixture(params=[make for _, make in BACKENDS], ids=[name for name, _ in BACKENDS])
def store(request, tmp_path):
    return request.param(tmp_path)


def put(store, name, data):
    with store.open_write(name) as f:
        f.write(data)


def get(store, name):
    with store.open_read(name) as (f, size):
        data = f.read()
    assert len(data) == size
    return data


def test_a_clean_block_commits_the_bytes(store):
    put(store, "a.ckpt", b"hello")
    assert get(store, "a.ckpt") == b"hello"


def test_a_new_write_replaces_the_old_object(store):
    put(store, "a.ckpt", b"old")
    put(store, "a.ckpt", b"new")
    assert get(store, "a.ckpt") == b"new"


def test_a_raising_block_leaves_nothing_visible(store):
    with pytest.raises(Boom):
        with store.open_write("a.ckpt") as f:
            f.write(b"partial")
            raise Boom
    assert store.list() == [] and not store.exists("a.ckpt")


def test_a_raising_block_keeps_the_old_content(store):
    put(store, "a.ckpt", b"old")
    with pytest.raises(Boom):
        with store.open_write("a.ckpt") as f:
            f.write(b"partial")
            raise Boom
    assert get(store, "a.ckpt") == b"old" and store.list() == ["a.ckpt"]


def test_nothing_is_visible_before_the_block_exits(store):
    with store.open_write("a.ckpt") as f:
        f.write(b"data")
        assert store.list() == [] and not store.exists("a.ckpt")
    assert store.list() == ["a.ckpt"]


def test_a_written_file_can_be_seeked_and_overwritten_before_commit(store):
    with store.open_write("a.ckpt") as f:
        f.write(b"0000rest")
        end = f.tell()
        f.seek(0)
        f.write(b"head")
        f.seek(end)
        f.write(b"!")
    assert get(store, "a.ckpt") == b"headrest!"


def test_an_empty_write_makes_an_empty_object(store):
    put(store, "a.ckpt", b"")
    assert get(store, "a.ckpt") == b"" and store.stat("a.ckpt").size == 0


def test_reads_support_seek_tell_and_readinto(store):
    put(store, "a.ckpt", bytes(range(100)))
    with store.open_read("a.ckpt") as (f, size):
        f.seek(10)
        buf = bytearray(5)
        assert f.readinto(buf) == 5 and bytes(buf) == bytes(range(10, 15))
        assert f.tell() == 15 and size == 100


def test_reading_a_missing_name_raises_file_not_found(store):
    with pytest.raises(FileNotFoundError):
        with store.open_read("missing.ckpt"):
            pass


def test_stat_of_a_missing_name_raises_file_not_found(store):
    with pytest.raises(FileNotFoundError):
        store.stat("missing.ckpt")


def test_stat_reports_the_size(store):
    put(store, "a.ckpt", b"x" * 1234)
    info = store.stat("a.ckpt")
    assert (info.name, info.size) == ("a.ckpt", 1234) and info.mtime > 0


def test_list_is_sorted(store):
    for name in ("b.ckpt", "a.ckpt", "c.ckpt"):
        put(store, name, b"x")
    assert store.list() == ["a.ckpt", "b.ckpt", "c.ckpt"]


def test_list_filters_by_prefix(store):
    for name in ("epoch=1.ckpt", "epoch=2.ckpt", "last.ckpt"):
        put(store, name, b"x")
    assert store.list("epoch=") == ["epoch=1.ckpt", "epoch=2.ckpt"]


def test_names_with_a_slash_are_files_in_a_folder(store):
    put(store, "run.ckpt/shard-1", b"1")
    put(store, "run.ckpt/shard-0", b"0")
    put(store, "run.ckpt/meta", b"m")
    put(store, "run.ckpt2", b"x")
    assert store.list("run.ckpt/") == ["run.ckpt/meta", "run.ckpt/shard-0", "run.ckpt/shard-1"]
    assert get(store, "run.ckpt/shard-1") == b"1"


def test_list_without_a_prefix_includes_files_in_folders(store):
    put(store, "a.ckpt", b"x")
    put(store, "run.ckpt/meta", b"m")
    assert store.list() == ["a.ckpt", "run.ckpt/meta"]


def test_a_folder_is_not_an_object(store):
    put(store, "run.ckpt/meta", b"m")
    assert not store.exists("run.ckpt")
    with pytest.raises((FileNotFoundError, IsADirectoryError)):
        with store.open_read("run.ckpt"):
            pass


def test_delete_removes_the_object(store):
    put(store, "a.ckpt", b"x")
    put(store, "b.ckpt", b"y")
    store.delete("a.ckpt")
    assert store.list() == ["b.ckpt"]


def test_delete_of_a_missing_name_is_fine(store):
    store.delete("missing.ckpt")
    assert store.list() == []


def test_delete_of_a_folder_removes_everything_under_it_and_nothing_beside_it(store):
    put(store, "run.ckpt/meta", b"m")
    put(store, "run.ckpt/sub/shard", b"s")
    put(store, "run.ckpt2", b"x")
    store.delete("run.ckpt")
    assert store.list() == ["run.ckpt2"]


def test_copy_makes_a_complete_second_object(store):
    put(store, "a.ckpt", b"data")
    store.copy("a.ckpt", "last.ckpt")
    assert get(store, "last.ckpt") == b"data" and store.list() == ["a.ckpt", "last.ckpt"]


def test_copy_replaces_the_destination(store):
    put(store, "a.ckpt", b"new")
    put(store, "last.ckpt", b"old")
    store.copy("a.ckpt", "last.ckpt")
    assert get(store, "last.ckpt") == b"new"


def test_a_copy_survives_deleting_its_source(store):
    put(store, "a.ckpt", b"data")
    store.copy("a.ckpt", "last.ckpt")
    store.delete("a.ckpt")
    assert get(store, "last.ckpt") == b"data"


def test_a_copy_keeps_its_bytes_when_the_source_is_rewritten(store):
    put(store, "a.ckpt", b"first")
    store.copy("a.ckpt", "last.ckpt")
    put(store, "a.ckpt", b"second")
    assert get(store, "last.ckpt") == b"first"


def test_copy_of_a_missing_name_raises_file_not_found_and_writes_nothing(store):
    with pytest.raises(FileNotFoundError):
        store.copy("missing.ckpt", "last.ckpt")
    assert store.list() == []


def test_copy_of_a_folder_copies_every_file_under_it(store):
    put(store, "run.ckpt/meta", b"m")
    put(store, "run.ckpt/shard-0", b"0")
    store.copy("run.ckpt", "last.ckpt")
    assert store.list("last.ckpt/") == ["last.ckpt/meta", "last.ckpt/shard-0"]
    assert get(store, "last.ckpt/shard-0") == b"0"


def test_copy_of_a_folder_replaces_the_old_folder_entirely(store):
    put(store, "last.ckpt/stale", b"s")
    put(store, "run.ckpt/meta", b"m")
    store.copy("run.ckpt", "last.ckpt")
    assert store.list("last.ckpt/") == ["last.ckpt/meta"]


def test_names_that_leave_the_store_are_refused(store):
    for bad in ("../a.ckpt", "/abs.ckpt", "a/../../b", ""):
        with pytest.raises(ValueError, match="invalid name"):
            with store.open_write(bad):
                pass


def test_describe_names_the_object(store):
    assert "a.ckpt" in store.describe("a.ckpt")


def test_a_child_store_sees_the_names_under_its_folder(store):
    put(store, "run.ckpt/meta", b"m")
    put(store, "run.ckpt2", b"beside, not inside")
    child = store.child("run.ckpt")
    put(child, "shard-0", b"0")
    assert child.list() == ["meta", "shard-0"] and get(store, "run.ckpt/shard-0") == b"0"
