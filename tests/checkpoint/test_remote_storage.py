"""FsspecStorage against a real S3 API (the moto server of tests/s3server.py) and memory://."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("fsspec")

from ember.checkpoint.storage import fsspec, multipart  # noqa: E402
from ember.checkpoint.storage.fsspec import FsspecStorage  # noqa: E402
from ember.checkpoint.storage.locations import open_store  # noqa: E402
from ember.errors import CheckpointError, MisconfigurationError  # noqa: E402

MiB = 1 << 20


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ at every offset modulo 251, so a misplaced range shows."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def put(store, name: str, data: bytes, piece: int = 1 * MiB + 3) -> None:
    with store.open_write(name) as f:
        for i in range(0, len(data), piece):
            f.write(data[i : i + piece])


def get(store, name: str) -> bytes:
    with store.open_read(name) as (f, size):
        data = f.read()
    assert len(data) == size
    return data


def incomplete_uploads(bucket_url: str) -> list[str]:
    import s3fs

    return [u["Key"] for u in s3fs.S3FileSystem().list_multipart_uploads(bucket_url[len("s3://"):])]


@pytest.fixture
def s3(s3_bucket):
    """A store under a folder of a fresh bucket, with S3's smallest part size so tests go multipart."""
    return FsspecStorage(f"{s3_bucket}/run", part_size=5 * MiB, read_chunk=1 * MiB, read_ahead=4)


# ----------------------------------------------------------------------------- S3: commit


def test_s3_small_write_round_trips(s3):
    put(s3, "a.ckpt", b"hello ember")
    assert get(s3, "a.ckpt") == b"hello ember"


def test_s3_multipart_upload_round_trips(s3, s3_bucket):
    data = pattern(13 * MiB + 17)  # three parts: 5 + 5 + 3 MiB
    put(s3, "big.ckpt", data)
    assert get(s3, "big.ckpt") == data and incomplete_uploads(s3_bucket) == []


def test_s3_upload_of_a_whole_number_of_parts_round_trips(s3):
    data = pattern(10 * MiB)  # exactly two parts, nothing left over at the end
    put(s3, "even.ckpt", data)
    assert get(s3, "even.ckpt") == data


def test_s3_empty_write_makes_an_empty_object(s3):
    put(s3, "empty", b"")
    assert get(s3, "empty") == b"" and s3.stat("empty").size == 0


def test_s3_raising_block_leaves_no_object_and_no_incomplete_upload(s3, s3_bucket):
    with pytest.raises(RuntimeError, match="boom"):
        with s3.open_write("big.ckpt") as f:
            f.write(pattern(12 * MiB))  # two parts already sent
            raise RuntimeError("boom")
    assert s3.list() == [] and not s3.exists("big.ckpt") and incomplete_uploads(s3_bucket) == []


def test_s3_raising_block_keeps_the_previous_object(s3):
    put(s3, "last.ckpt", b"previous")
    with pytest.raises(RuntimeError):
        with s3.open_write("last.ckpt") as f:
            f.write(pattern(11 * MiB))
            raise RuntimeError("boom")
    assert get(s3, "last.ckpt") == b"previous"


def test_s3_writer_rewrites_its_first_part_before_commit(s3):
    data = pattern(12 * MiB)  # the first part is held back; parts 2 and 3 go up
    with s3.open_write("a.ckpt") as f:
        f.write(data)
        end = f.tell()
        f.seek(0)
        f.write(b"HEAD")
        f.seek(end)
        f.write(b"!")
    assert get(s3, "a.ckpt") == b"HEAD" + data[4:] + b"!"


def test_s3_writer_refuses_to_seek_into_bytes_already_uploaded(s3):
    with pytest.raises(io.UnsupportedOperation, match="cannot seek to byte 6291456"):
        with s3.open_write("a.ckpt") as f:
            f.write(pattern(12 * MiB))
            f.seek(6 * MiB)  # in part 2, sent
    assert s3.list() == []


def test_s3_part_numbers_follow_the_growing_part_size():
    upload = multipart.S3Upload(None, "b", "k", 5 * MiB, 1, "s3://b/k")
    assert [upload._number(i * 5 * MiB) for i in (0, 1, 999)] == [1, 2, 1000]
    assert upload._number(1000 * 5 * MiB) == 1001 and upload._number(1000 * 5 * MiB + 10 * MiB) == 1002


def test_an_ember_checkpoint_larger_than_a_part_round_trips_through_s3(s3_bucket):
    import torch

    import ember

    state = {"w": torch.arange(10 << 20, dtype=torch.float32), "step": 7}  # 40 MiB: two 32 MiB parts
    ember.save_checkpoint(state, f"{s3_bucket}/run/a.ckpt")
    out = ember.load_checkpoint(f"{s3_bucket}/run/a.ckpt")  # verifies every checksum
    assert out["step"] == 7 and torch.equal(out["w"], state["w"])


def test_s3_upload_killed_with_sigkill_leaves_the_previous_object(s3, s3_bucket):
    put(s3, "last.ckpt", b"previous complete checkpoint")
    child = textwrap.dedent(
        """
        import sys, time
        from ember.checkpoint.storage.fsspec import FsspecStorage
        store = FsspecStorage(sys.argv[1], part_size=5 << 20)
        with store.open_write("last.ckpt") as f:
            for _ in range(16):
                f.write(b"n" * (1 << 20))  # three 5 MiB parts handed to the uploader
            print("uploading", flush=True)
            time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child, f"{s3_bucket}/run"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "uploading"
        assert incomplete_uploads(s3_bucket) == ["run/last.ckpt"]  # killed mid-upload, not after
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert s3.list() == ["last.ckpt"] and get(s3, "last.ckpt") == b"previous complete checkpoint"


def test_s3_cleanup_aborts_incomplete_uploads_under_its_root_only(s3, s3_bucket):
    import s3fs

    fs = s3fs.S3FileSystem()
    bucket = s3_bucket[len("s3://"):]
    fs.call_s3("create_multipart_upload", Bucket=bucket, Key="run/killed.ckpt")
    fs.call_s3("create_multipart_upload", Bucket=bucket, Key="other/killed.ckpt")
    assert s3.cleanup(older_than=0) == ["incomplete upload of killed.ckpt"]
    assert incomplete_uploads(s3_bucket) == ["other/killed.ckpt"]


def test_s3_cleanup_keeps_recent_incomplete_uploads(s3, s3_bucket):
    import s3fs

    s3fs.S3FileSystem().call_s3("create_multipart_upload", Bucket=s3_bucket[len("s3://"):], Key="run/writing.ckpt")
    # moto dates every upload in 2010, so only an age longer than that counts as recent here
    assert s3.cleanup(older_than=100 * 365 * 86400) == []
    assert incomplete_uploads(s3_bucket) == ["run/writing.ckpt"]


def test_s3_cleanup_removes_temporary_objects(s3):
    put(s3, f"{fsspec.TMP_PREFIX}123-abcd-x.ckpt{fsspec.TMP_SUFFIX}", b"left by a killed writer")
    put(s3, "x.ckpt", b"kept")
    assert s3.cleanup(older_than=0) == [f"{fsspec.TMP_PREFIX}123-abcd-x.ckpt{fsspec.TMP_SUFFIX}"]
    assert s3.fs.find(s3.root) == [f"{s3.root}/x.ckpt"]


# ----------------------------------------------------------------------------- S3: queries and changes


def test_s3_list_hides_incomplete_uploads_and_temporaries(s3):
    put(s3, "a.ckpt", b"a")
    put(s3, f"{fsspec.TMP_PREFIX}1-ab-b.ckpt{fsspec.TMP_SUFFIX}", b"temp")
    with s3.open_write("c.ckpt") as f:
        f.write(pattern(6 * MiB))  # one part up, upload open
        assert s3.list() == ["a.ckpt"]


def test_s3_list_matches_a_prefix_inside_folders(s3):
    for name in ["run.ckpt/meta", "run.ckpt/shard-0", "run2.ckpt", "other"]:
        put(s3, name, b"x")
    assert s3.list("run") == ["run.ckpt/meta", "run.ckpt/shard-0", "run2.ckpt"]
    assert s3.list("run.ckpt/sh") == ["run.ckpt/shard-0"]


def test_s3_delete_of_a_folder_removes_everything_under_it_and_nothing_beside_it(s3):
    for name in ["run.ckpt/meta", "run.ckpt/deep/shard-0", "run.ckpt2"]:
        put(s3, name, b"x")
    s3.delete("run.ckpt")
    assert s3.list() == ["run.ckpt2"]


def test_s3_delete_of_a_missing_name_is_not_an_error(s3):
    s3.delete("nothing-here.ckpt")
    assert s3.list() == []


def test_s3_stat_reports_size_and_modification_time(s3):
    import time

    put(s3, "a.ckpt", b"12345")
    info = s3.stat("a.ckpt")
    assert info.size == 5 and abs(info.mtime - time.time()) < 24 * 3600


def test_s3_missing_object_raises_file_not_found(s3):
    with pytest.raises(FileNotFoundError):
        s3.stat("missing.ckpt")
    with pytest.raises(FileNotFoundError):
        with s3.open_read("missing.ckpt"):
            pass


def test_s3_copy_makes_a_complete_second_object(s3):
    data = pattern(7 * MiB)
    put(s3, "epoch=1.ckpt", data)
    s3.copy("epoch=1.ckpt", "last.ckpt")
    assert get(s3, "last.ckpt") == data and s3.list() == ["epoch=1.ckpt", "last.ckpt"]


def test_s3_copy_above_the_single_request_limit_goes_in_parts(s3, s3_bucket, monkeypatch):
    monkeypatch.setattr(fsspec, "S3_MAX_COPY", 5 * MiB)  # stands in for S3's 5 GiB
    data = pattern(12 * MiB + 5)
    put(s3, "epoch=1.ckpt", data)
    s3.copy("epoch=1.ckpt", "last.ckpt")
    assert get(s3, "last.ckpt") == data and incomplete_uploads(s3_bucket) == []


# ----------------------------------------------------------------------------- S3: reads


def test_s3_reads_support_seek_tell_and_readinto_across_ranges(s3):
    data = pattern(5 * MiB + 123)
    put(s3, "a", data)
    with s3.open_read("a") as (f, size):
        f.seek(size - 1000)
        tail = f.read()
        f.seek(MiB - 10)
        buf = bytearray(3 * MiB)
        n = f.readinto(buf)
        position = f.tell()
    assert tail == data[-1000:] and bytes(buf) == data[MiB - 10 : 4 * MiB - 10] and n == len(buf)
    assert position == 4 * MiB - 10


def test_s3_read_of_an_object_replaced_midway_is_an_error_not_a_mix(s3):
    put(s3, "last.ckpt", pattern(3 * MiB, seed=1))
    with s3.open_read("last.ckpt") as (f, _):
        f.read(MiB)  # the first range only: the read-ahead window starts at one range
        put(s3, "last.ckpt", pattern(3 * MiB, seed=2))
        with pytest.raises(CheckpointError, match="replaced while it was being read"):
            f.read()


class RecordedFetch:
    """Ranged reads of an in-memory object, recorded: the fetch function a _RangeReader is built on."""

    def __init__(self, data: bytes) -> None:
        self.data, self.ranges = data, []

    def __call__(self, start: int, end: int):
        import concurrent.futures

        self.ranges.append((start, end))
        f = concurrent.futures.Future()
        f.set_result(self.data[start:end])
        return f


def test_reading_a_header_fetches_one_small_range():
    fetch = RecordedFetch(pattern(100 * MiB))
    reader = multipart.RangeReader(fetch, 100 * MiB, chunk=64 * MiB, depth=4)
    reader.read(8)
    reader.read(4096)
    assert fetch.ranges == [(0, 1 * MiB)]


def test_a_sequential_read_fetches_every_byte_once_in_growing_ranges():
    data = pattern(100 * MiB + 5)
    fetch = RecordedFetch(data)
    reader = multipart.RangeReader(fetch, len(data), chunk=16 * MiB, depth=4)
    assert reader.read() == data
    starts, ends = zip(*fetch.ranges)
    assert starts == (0,) + ends[:-1] and ends[-1] == len(data)
    assert [e - s for s, e in fetch.ranges][:6] == [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 16 * MiB]


# ----------------------------------------------------------------------------- configuration


def test_open_store_routes_s3_urls_to_fsspec_storage(s3_bucket):
    store = open_store(f"{s3_bucket}/run")
    assert isinstance(store, FsspecStorage) and store.describe("a.ckpt") == f"{s3_bucket}/run/a.ckpt"


def test_open_store_imports_the_fsspec_backend_on_the_first_url():
    code = "from ember.checkpoint.storage.locations import open_store; print(type(open_store('memory://run')).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "FsspecStorage"


def test_storage_options_give_the_endpoint_and_credentials(s3_bucket, monkeypatch):
    import s3fs

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    s3fs.S3FileSystem.clear_instance_cache()
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    store = open_store(f"{s3_bucket}/run", options)
    put(store, "a.ckpt", b"via storage_options")
    assert get(store, "a.ckpt") == b"via storage_options"


def test_a_missing_backend_package_names_the_extra_to_install(monkeypatch):
    import fsspec

    if "gs" in fsspec.registry:
        pytest.skip("gcsfs is already imported in this process")
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed
    with pytest.raises(ImportError, match=r'gs:// URLs need the gcsfs package .*pip install "ember-train\[gcs\]"'):
        open_store("gs://bucket/run")


def test_an_unknown_scheme_is_refused_with_what_to_use(monkeypatch):
    with pytest.raises(MisconfigurationError, match=r"no storage backend for nosuch:// URLs .*s3://"):
        FsspecStorage("nosuch://bucket/run")


def test_part_size_below_the_s3_minimum_is_refused():
    with pytest.raises(MisconfigurationError, match="part_size must be at least 5 MiB"):
        FsspecStorage("memory://run", part_size=1 * MiB)


# ----------------------------------------------------------------------------- memory://


@pytest.fixture
def memory():
    import secrets

    store = FsspecStorage(f"memory://ember-{secrets.token_hex(4)}/run")
    yield store
    store.fs.rm(store.root, recursive=True)


def test_memory_round_trip(memory):
    data = pattern(3 * MiB)
    put(memory, "run.ckpt/shard-0", data)
    assert get(memory, "run.ckpt/shard-0") == data and memory.list() == ["run.ckpt/shard-0"]


def test_memory_raising_block_leaves_no_object_and_no_temporary(memory):
    with pytest.raises(RuntimeError):
        with memory.open_write("a.ckpt") as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert memory.list() == [] and memory.fs.find(memory.root) == []


def test_memory_copy_makes_a_complete_second_object(memory):
    put(memory, "a.ckpt", b"abc")
    memory.copy("a.ckpt", "last.ckpt")
    assert get(memory, "last.ckpt") == b"abc"
