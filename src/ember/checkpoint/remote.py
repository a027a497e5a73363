"""Checkpoints at fsspec URLs: ``s3://``, ``gs://``, ``az://``, ``memory://`` and any other store fsspec knows.

Importing this module registers ``FsspecStorage`` for every URL scheme that has no backend of its
own (``register_scheme("default", ...)``); ``store.open_store`` imports it on the first URL it sees.
``file://`` URLs still go to ``LocalStorage`` (fsync + rename, and a local path for mmap).

Credentials and endpoints come from each backend's own configuration (for S3: the AWS environment
variables and config files, ``AWS_ENDPOINT_URL`` included) or from ``storage_options``, spelt as
fsspec spells them (``{"key": ..., "secret": ..., "endpoint_url": ...}`` for s3fs).

How a write becomes final (the name shows the previous object or the complete new one, never a part):

- **S3** (s3fs): the bytes stream up as a multipart upload while the writer produces them — parts
  of ``part_size`` bytes, up to ``concurrency`` in flight; the first part is held back until the
  end, so at most ``(concurrency + 2) * part_size`` bytes are held in memory.
  ``CompleteMultipartUpload`` on a clean exit makes the object appear whole; an exception aborts
  the upload. A file no larger than one part is a single PUT. A writer killed outright leaves an incomplete multipart upload: never listed or readable,
  but stored (and billed) until aborted — ``cleanup()`` aborts those older than an age, as does an
  S3 lifecycle rule ``AbortIncompleteMultipartUpload``. ``copy`` is server-side (``CopyObject``;
  parallel ``UploadPartCopy`` above 5 GiB), so ``last.ckpt`` is a real object.
- **Every other store**: the bytes go to a temporary name (``temporaries.temp_name``: the same
  ``.ember-tmp-...part`` spelling as local temporaries) next to the target, which is then moved onto the target. On ``memory://`` and ``file://`` the
  move is a rename (atomic). On ``gs://`` and ``az://`` fsspec moves by a server-side copy and a
  delete: the target appears whole (object creation is atomic there) but the bytes are copied once
  more inside the store. A killed writer leaves the temporary, which ``list`` hides and ``cleanup()``
  removes.

Writers on S3 are seekable within the held-back first part and the part being filled (cheap: no
bytes are re-sent), which is what ember's format writer needs to fill in the header's checksums at
the end while the tensors stream up. Writers of gs:// and az:// (fsspec's buffered files) are not
seekable; the format writer then checksums first and streams once. Readers of
remote (async) stores stream over ranged GETs: a first range of 1 MiB (a header read costs one small
GET), then, while reads stay sequential, ranges that double up to ``read_chunk`` bytes with up to
``read_ahead`` in flight at once (so at most ``read_ahead * read_chunk`` bytes held). On S3 every
range is pinned to the ETag seen at open: an object replaced mid-read is an error, not a mix of two
files. Local and memory stores hand out their own file objects. Folders (``copy`` of a folder name)
are copied file by file: not atomic as a whole on any store here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import io
import queue
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from ember.checkpoint.contract import Info, Storage, register_scheme
from ember.checkpoint.storage import check_name
from ember.checkpoint.temporaries import STALE_AFTER_S, TMP_PREFIX, TMP_SUFFIX, is_temporary, temp_name
from ember.errors import CheckpointError, MisconfigurationError

__all__ = ["FsspecStorage", "TMP_PREFIX", "TMP_SUFFIX"]

MiB = 1 << 20
S3_MIN_PART = 5 * MiB  # every part but the last must be at least this (S3 rule)
S3_MAX_PART = 5 << 30
S3_MAX_PARTS = 10_000
S3_MAX_COPY = 5 << 30  # the largest object one CopyObject call copies

# scheme -> (package, extra) for the error that names what to install
_EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
}


def _missing_backend(scheme: str, url: str, detail: str = "") -> ImportError:
    package, extra = _EXTRAS.get(scheme, (None, "fsspec"))
    if package:
        text = f'{scheme}:// URLs need the {package} package (received {url!r}): pip install "ember-train[{extra}]"'
    else:
        text = f'{scheme}:// URLs need fsspec and the package it names for them (received {url!r}): pip install "ember-train[fsspec]"'
    if detail:
        text += f" ({detail})"
    return ImportError(text, name=package or "fsspec")


def _is_temporary(name: str) -> bool:
    return is_temporary(name.rpartition("/")[2])


def _temporary_name(name: str) -> str:
    """A temporary name next to ``name`` (same spelling as local temporaries: one rule hides them all)."""
    folder, slash, base = name.rpartition("/")
    return f"{folder}{slash}{temp_name(base)}"


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _mtime(info: dict) -> float:
    for key in ("LastModified", "mtime", "last_modified", "updated", "modified", "created", "creation_time"):
        t = _timestamp(info.get(key))
        if t is not None:
            return t
    return 0.0


class FsspecStorage(Storage):
    """Named objects under the folder ``url`` of any fsspec file system; see the module docstring."""

    def __init__(
        self,
        url: str,
        storage_options: dict | None = None,
        *,
        part_size: int = 32 * MiB,
        concurrency: int = 8,
        read_chunk: int = 64 * MiB,
        read_ahead: int = 4,
    ) -> None:
        """
        Args:
            url: the folder, e.g. ``"s3://bucket/run"``.
            storage_options: passed to the fsspec file system, as fsspec spells them.
            part_size: bytes per multipart part on S3 (at least 5 MiB); parts grow past 1000 of them.
            concurrency: parts uploaded at once on S3; memory held is ``(concurrency + 1) * part_size``.
            read_chunk: bytes per ranged GET when reading from a remote store.
            read_ahead: most ranged GETs in flight (and held) ahead of the reader.
        """
        scheme = url.partition("://")[0].lower() if "://" in url else "file"
        try:
            import fsspec
        except ImportError as e:
            raise _missing_backend(scheme, url) from e
        try:
            fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except ImportError as e:
            raise _missing_backend(scheme, url, str(e)) from e
        except ValueError as e:
            if "Protocol not known" in str(e):
                raise MisconfigurationError(
                    f"no storage backend for {scheme}:// URLs (received {url!r}); use a local path, "
                    "or a URL of a store fsspec knows (s3://, gs://, az://, memory://, file://)"
                ) from e
            raise
        if part_size < S3_MIN_PART:
            raise MisconfigurationError(f"part_size must be at least 5 MiB (an S3 rule); received part_size={part_size}")
        if concurrency < 1 or read_ahead < 1 or read_chunk < 1:
            raise MisconfigurationError(
                f"concurrency, read_ahead and read_chunk must be positive; received "
                f"concurrency={concurrency}, read_ahead={read_ahead}, read_chunk={read_chunk}"
            )
        self.url = url
        self.fs = fs
        self.root = path.rstrip("/")
        self.part_size, self.concurrency = part_size, concurrency
        self.read_chunk, self.read_ahead = read_chunk, read_ahead
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self._s3 = "s3" in protocols
        self._local = "file" in protocols or "local" in protocols
        self._folders = self._local or "memory" in protocols  # stores whose folders must exist before a write

    # ------------------------------------------------------------------ names

    def _path(self, name: str) -> str:
        """The fsspec path of ``name`` ("" is the root); ValueError for names that leave the store."""
        if not name:
            return self.root
        check_name(name)
        name = name.rstrip("/")
        return f"{self.root}/{name}" if self.root else name

    def _name(self, path: str) -> str | None:
        if not self.root:
            return path.lstrip("/")
        return path[len(self.root) + 1 :] if path.startswith(self.root + "/") else None

    def describe(self, name: str = "") -> str:
        return self.fs.unstrip_protocol(self._path(name))

    def local_path(self, name: str) -> Path | None:
        return Path(self._path(name)) if self._local else None

    def _fresh(self, path: str) -> None:
        """Drop fsspec's cached listings: another process may have changed the store."""
        self.fs.invalidate_cache(path)

    # ------------------------------------------------------------------ queries

    def _find(self, folder: str) -> list[str]:
        self._fresh(folder)
        try:
            return self.fs.find(folder, withdirs=False)
        except FileNotFoundError:
            return []

    def list(self, prefix: str = "") -> list[str]:
        folder = prefix.rpartition("/")[0]
        names = (self._name(p) for p in self._find(self._path(folder)))
        return sorted(n for n in names if n and n.startswith(prefix) and not n.endswith("/") and not _is_temporary(n))

    def _info(self, name: str) -> dict:
        """fsspec's info on the object ``name``: FileNotFoundError when missing, IsADirectoryError for a folder."""
        check_name(name)
        path = self._path(name)
        if _is_temporary(name):
            raise FileNotFoundError(f"no object {self.describe(name)}")
        self._fresh(path)
        info = self.fs.info(path)
        if info.get("type") != "file":
            raise IsADirectoryError(f"{self.describe(name)} is a folder, not an object")
        return info

    def stat(self, name: str) -> Info:
        info = self._info(name)
        return Info(name, int(info["size"]), _mtime(info))

    # ------------------------------------------------------------------ changes

    def delete(self, name: str) -> None:
        check_name(name)
        path = self._path(name)
        self._fresh(path)
        with contextlib.suppress(FileNotFoundError):
            if self.fs.isfile(path):
                self.fs.rm_file(path)
        under = [p for p in self._find(path) if p.startswith(path + "/")]
        if under:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(under)
        with contextlib.suppress(OSError):  # empty folders of stores that have them (memory, local)
            if self.fs.isdir(path):
                self.fs.rm(path, recursive=True)
        self._fresh(path)

    def copy(self, src: str, dst: str) -> None:
        """A file: one atomic copy (server-side where the store has it). A folder: file by file, then
        what the old ``dst`` folder held beyond them is removed; not atomic as a whole, so a folder
        checkpoint's own last-written metadata object must be what marks it complete."""
        check_name(dst)
        try:
            size = self._info(src)["size"]
        except IsADirectoryError:
            self._copy_folder(src, dst)
            return
        self._copy_file(src, dst, size)

    def _copy_folder(self, src: str, dst: str) -> None:
        names = [n[len(src) + 1 :] for n in self.list(src.rstrip("/") + "/")]
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            sizes = list(pool.map(lambda n: self._info(f"{src}/{n}")["size"], names))
            list(pool.map(lambda n, size: self._copy_file(f"{src}/{n}", f"{dst}/{n}", size), names, sizes))
        stale = set(self.list(dst.rstrip("/") + "/")) - {f"{dst}/{n}" for n in names}
        if stale:
            self.fs.rm([self._path(n) for n in sorted(stale)])
        with contextlib.suppress(FileNotFoundError):
            if self.fs.isfile(self._path(dst)):
                self.fs.rm_file(self._path(dst))
        self._fresh(self._path(dst))

    def _copy_file(self, src: str, dst: str, size: int) -> None:
        source, target = self._path(src), self._path(dst)
        try:
            if self._s3:
                self._s3_copy(source, target, size)
            elif self._local:
                tmp = self._path(_temporary_name(dst))
                try:
                    self.fs.copy(source, tmp)
                    self.fs.mv(tmp, target)
                finally:
                    with contextlib.suppress(OSError):
                        if self.fs.exists(tmp):
                            self.fs.rm_file(tmp)
            else:  # object stores copy server-side into a new object; memory copies in one step
                self.fs.copy(source, target)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise CheckpointError(f"could not copy {self.describe(src)} to {self.describe(dst)}: {e}") from e
        finally:
            self._fresh(target)

    @contextlib.contextmanager
    def open_write(self, name: str) -> Iterator[BinaryIO]:
        check_name(name)
        path = self._path(name)
        if self._s3:
            bucket, key, _ = self.fs.split_path(path)
            writer = _S3Upload(self.fs, bucket, key, self.part_size, self.concurrency, self.describe(name))
            try:
                yield writer
            except BaseException:
                writer.abort()
                raise
            writer.complete()
            self._fresh(path)
            return
        tmp = self._path(_temporary_name(name))
        try:
            parent = tmp.rpartition("/")[0]
            if parent and self._folders:
                self.fs.makedirs(parent, exist_ok=True)
            with self.fs.open(tmp, "wb") as f:
                yield f
            self.fs.mv(tmp, path)
        except BaseException as e:
            with contextlib.suppress(Exception):
                if self.fs.exists(tmp):
                    self.fs.rm_file(tmp)
            if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
                raise CheckpointError(f"could not save {self.describe(name)}: {e}") from e
            raise
        finally:
            self._fresh(path)

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[tuple[BinaryIO, int]]:
        info = self._info(name)  # FileNotFoundError when missing, IsADirectoryError for a folder
        size, path = int(info["size"]), self._path(name)
        if self.fs.async_impl:
            if self._s3:
                bucket, key, _ = self.fs.split_path(path)
                fetch = _s3_range_getter(self.fs, bucket, key, info.get("ETag"), self.describe(name))
            else:
                fetch = _range_getter(self.fs, path)
            reader = _RangeReader(fetch, size, self.read_chunk, self.read_ahead)
        else:
            reader = self.fs.open(path, "rb")
        with reader:
            yield reader, size

    # ------------------------------------------------------------------ housekeeping

    def cleanup(self, older_than: float = STALE_AFTER_S) -> list[str]:
        """Remove what interrupted writers left under this store's root: temporary objects and, on S3,
        incomplete multipart uploads, started more than ``older_than`` seconds ago. Returns what was
        removed. A writer still running elsewhere is left alone only if it started more recently."""
        cutoff = time.time() - older_than
        removed = []
        for path in self._find(self.root):
            name = self._name(path)
            if not name or not _is_temporary(name):
                continue
            with contextlib.suppress(FileNotFoundError):
                if _mtime(self.fs.info(path)) <= cutoff:
                    self.fs.rm_file(path)
                    removed.append(name)
        if self._s3:
            removed += self._abort_stale_uploads(cutoff)
        self._fresh(self.root)
        return removed

    # ------------------------------------------------------------------ S3 specifics

    def _call(self, method: str, **kwargs: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, self.fs._call_s3, method, **kwargs)

    def _abort_stale_uploads(self, cutoff: float) -> list[str]:
        bucket, key, _ = self.fs.split_path(self.root)
        prefix = key + "/" if key else ""
        removed, marker = [], {}
        while True:
            page = self._call("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **marker)
            for upload in page.get("Uploads") or []:
                started = _timestamp(upload.get("Initiated"))
                if started is not None and started > cutoff:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    self._call("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    removed.append(f"incomplete upload of {upload['Key'][len(prefix):]}")
            if not page.get("IsTruncated"):
                return removed
            marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def _s3_copy(self, source: str, target: str, size: int) -> None:
        sb, sk, _ = self.fs.split_path(source)
        tb, tk, _ = self.fs.split_path(target)
        if size <= S3_MAX_COPY:
            self._call("copy_object", Bucket=tb, Key=tk, CopySource={"Bucket": sb, "Key": sk})
            return
        # Above 5 GiB one CopyObject call is refused: copy ranges in parallel, complete (atomic) or abort.
        part = max(self.part_size, -(-size // S3_MAX_PARTS))
        upload = self._call("create_multipart_upload", Bucket=tb, Key=tk)["UploadId"]
        ranges = [(i + 1, start, min(start + part, size) - 1) for i, start in enumerate(range(0, size, part))]
        try:
            with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
                results = pool.map(
                    lambda r: self._call(
                        "upload_part_copy", Bucket=tb, Key=tk, UploadId=upload, PartNumber=r[0],
                        CopySource={"Bucket": sb, "Key": sk}, CopySourceRange=f"bytes={r[1]}-{r[2]}",
                    ),
                    ranges,
                )
                parts = [{"PartNumber": r[0], "ETag": out["CopyPartResult"]["ETag"]} for r, out in zip(ranges, results)]
            self._call("complete_multipart_upload", Bucket=tb, Key=tk, UploadId=upload, MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):
                self._call("abort_multipart_upload", Bucket=tb, Key=tk, UploadId=upload)
            raise


# ----------------------------------------------------------------------------- S3 streaming upload


class _S3Upload(io.RawIOBase):
    """A stream that uploads itself as an S3 multipart upload, part by part as it fills.

    Parts go up concurrently on fsspec's event loop while the caller keeps writing; the caller waits
    only when every part buffer is busy. The first part is held back until ``complete()``, so the
    stream is seekable within it (ember's format writer fills in the header's checksums at the end)
    and within the part being filled; bytes already sent cannot be rewritten. ``complete()`` makes the
    object appear (one PUT if it never outgrew the first part); ``abort()`` throws everything away.
    Memory held: ``concurrency + 2`` part buffers (the first part, the one filling, those in flight).
    """

    def __init__(self, fs: Any, bucket: str, key: str, part_size: int, concurrency: int, where: str) -> None:
        super().__init__()
        self._fs, self._bucket, self._key, self._where = fs, bucket, key, where
        self._base = part_size
        self._max_buffers = concurrency + 2
        self._buffers = 0  # allocated: held, filling, uploading or free
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._head: bytearray | None = None  # part 1, full, held until complete()
        self._buf: bytearray | None = None  # the part being filled
        self._buf_start = 0  # its offset in the object
        self._fill = 0  # bytes in it
        self._size = 0  # bytes in the object so far
        self._pos = 0  # where the next write goes
        self._upload_id: str | None = None
        self._parts: dict[int, str] = {}  # part number -> ETag, once uploaded
        self._pending: set[concurrent.futures.Future] = set()
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _held(self, pos: int) -> tuple[bytearray, int, int] | None:
        """``(buffer, offset, bytes after it)`` of the not yet uploaded byte ``pos``, or None if it was sent."""
        if self._head is not None and pos < len(self._head):
            return self._head, pos, len(self._head) - pos
        if self._buf is not None and self._buf_start <= pos < self._buf_start + self._fill:
            return self._buf, pos - self._buf_start, self._buf_start + self._fill - pos
        return None

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence] + offset
        if target != self._size and (target < 0 or target > self._size or self._held(target) is None):
            raise io.UnsupportedOperation(
                f"cannot seek to byte {target} of the upload of {self._where} ({self._size} bytes written): "
                f"only the first part ({self._base} bytes), the part being filled and the end can be written to"
            )
        self._pos = target
        return target

    def _call(self, method: str, **kwargs: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self._fs.loop, self._fs._call_s3, method, Bucket=self._bucket, Key=self._key, **kwargs)

    def _part_size(self, number: int) -> int:
        # Double the part size every 1000 parts so 10,000 parts reach far past any checkpoint size.
        return min(self._base << ((number - 1) // 1000), S3_MAX_PART)

    def _number(self, start: int) -> int:
        """The part number of the part that starts at byte ``start`` (part sizes step up every 1000)."""
        number, offset = 1, 0
        while True:
            size = self._part_size(number)
            block = (1000 - (number - 1) % 1000) * size if size < S3_MAX_PART else start - offset + size
            if start < offset + block:
                return number + (start - offset) // size
            offset += block
            number += block // size

    def _take_buffer(self, size: int) -> bytearray:
        while True:
            try:
                buf = self._free.get_nowait()
            except queue.Empty:
                with self._lock:
                    if self._buffers < self._max_buffers:
                        self._buffers += 1
                        return bytearray(size)
                buf = self._free.get()  # every buffer is busy uploading: wait for one to come back
            self._raise_if_failed()
            if len(buf) == size:
                return buf
            with self._lock:  # the part size grew; let the smaller buffer go
                self._buffers -= 1

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise CheckpointError(f"could not upload {self._where}: {self._error}") from self._error

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed upload")
        self._raise_if_failed()
        view = memoryview(data).cast("B")
        done, n = 0, len(view)
        while done < n:
            if self._pos < self._size:  # rewriting bytes not yet sent
                held = self._held(self._pos)
                if held is None:
                    raise io.UnsupportedOperation(f"byte {self._pos} of {self._where} is already uploaded")
                buf, offset, room = held
            else:  # appending
                if self._buf is None:
                    self._buf_start, self._fill = self._size, 0
                    self._buf = self._take_buffer(self._part_size(self._number(self._size)))
                buf, offset, room = self._buf, self._fill, len(self._buf) - self._fill
            take = min(n - done, room)
            buf[offset : offset + take] = view[done : done + take]
            done += take
            self._pos += take
            if self._pos > self._size:
                self._fill += self._pos - self._size
                self._size = self._pos
            if self._buf is not None and self._fill == len(self._buf):
                if self._buf_start == 0:
                    self._head = self._buf
                else:
                    self._send_part(self._buf, self._number(self._buf_start), self._fill)
                self._buf, self._fill = None, 0
        return n

    def _send_part(self, buf: bytearray, number: int, fill: int) -> None:
        import asyncio

        if number > S3_MAX_PARTS:
            raise CheckpointError(f"{self._where} needs more than {S3_MAX_PARTS} parts; raise part_size")
        if self._upload_id is None:
            self._upload_id = self._call("create_multipart_upload")["UploadId"]
        body = buf if fill == len(buf) else bytes(memoryview(buf)[:fill])
        coro = self._fs._call_s3(
            "upload_part", Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        future = asyncio.run_coroutine_threadsafe(coro, self._fs.loop)
        with self._lock:
            self._pending.add(future)

        def done(f: concurrent.futures.Future) -> None:
            with self._lock:
                self._pending.discard(f)
                if f.cancelled():
                    self._error = self._error or CheckpointError("upload cancelled")
                elif f.exception() is not None:
                    self._error = self._error or f.exception()
                else:
                    self._parts[number] = f.result()["ETag"]
            self._free.put(buf)

        future.add_done_callback(done)

    def _wait(self) -> None:
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return
            concurrent.futures.wait(pending)

    def complete(self) -> None:
        """Finish the upload: the object appears whole under its key, or an error is raised and nothing does."""
        try:
            self._raise_if_failed()
            if self._head is None:  # it all fits in one part
                body = bytes(memoryview(self._buf)[: self._fill]) if self._buf is not None else b""
                self._call("put_object", Body=body)
            else:
                if self._buf is not None and self._fill:
                    self._send_part(self._buf, self._number(self._buf_start), self._fill)
                self._send_part(self._head, 1, len(self._head))
                self._buf = self._head = None
                self._wait()
                self._raise_if_failed()
                parts = [{"PartNumber": k, "ETag": v} for k, v in sorted(self._parts.items())]
                self._call("complete_multipart_upload", UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise CheckpointError(f"could not upload {self._where}: {e}") from e
            raise
        finally:
            self._buf = self._head = None
            super().close()

    def abort(self) -> None:
        """Throw the upload away: nothing appears under the key and no incomplete upload is left."""
        self._buf = self._head = None
        self._wait()  # parts still in flight would race the abort; they take a moment at most
        if self._upload_id is not None:
            upload, self._upload_id = self._upload_id, None
            with contextlib.suppress(FileNotFoundError):  # already gone
                self._call("abort_multipart_upload", UploadId=upload)
        super().close()


# ----------------------------------------------------------------------------- streaming ranged reads


def _s3_range_getter(fs: Any, bucket: str, key: str, etag: str | None, where: str) -> Callable[[int, int], Any]:
    """``(start, end) -> future of bytes`` for one S3 object, every range pinned to the ETag seen at open."""
    import asyncio

    match = {"IfMatch": etag} if etag else {}

    async def get(start: int, end: int) -> bytes:
        try:
            resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **match)
        except OSError as e:
            if "pre-condition" in str(e).lower() or "precondition" in str(e).lower():
                raise CheckpointError(f"{where} was replaced while it was being read; read it again") from e
            raise
        try:
            return await resp["Body"].read()
        finally:
            resp["Body"].close()

    return lambda start, end: asyncio.run_coroutine_threadsafe(get(start, end), fs.loop)


def _range_getter(fs: Any, path: str) -> Callable[[int, int], Any]:
    import asyncio

    return lambda start, end: asyncio.run_coroutine_threadsafe(fs._cat_file(path, start=start, end=end), fs.loop)


class _RangeReader(io.RawIOBase):
    """A seekable read stream over ranged GETs that fetches ahead of the reader, in parallel.

    Reading from a new position (the start, or after a seek away) fetches one small range there, so a
    header read costs one small GET. While the reader goes on sequentially, each range it enters lets
    more follow: the ranges double in size up to ``chunk`` and the number in flight doubles up to
    ``depth``. Ranges behind the reader are dropped, so at most ``depth`` ranges are held.
    """

    FIRST = 1 * MiB  # the first range after opening or seeking away

    def __init__(self, fetch: Callable[[int, int], concurrent.futures.Future], size: int, chunk: int, depth: int) -> None:
        super().__init__()
        self._fetch, self._size, self._chunk, self._depth = fetch, size, chunk, depth
        self._ranges: collections.deque[tuple[int, int, concurrent.futures.Future]] = collections.deque()
        self._next = 0  # where the next range to fetch starts
        self._step = self.FIRST  # its size
        self._ahead = 1  # how many ranges to keep in flight
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def _drop(self) -> None:
        for _, _, f in self._ranges:
            f.cancel()
        self._ranges.clear()

    def _range_at(self, pos: int) -> tuple[int, bytes]:
        """``(start, data)`` of the fetched range holding ``pos``, fetching ahead as reads stay sequential."""
        entered = False
        while self._ranges and self._ranges[0][1] <= pos:  # read past: let it go
            self._ranges.popleft()
            entered = True
        first = self._ranges[0][0] if self._ranges else self._next
        if not first <= pos < max(self._next, first + 1):  # not sequential: start again here, small
            self._drop()
            self._next, self._step, self._ahead = pos, self.FIRST, 1
        elif entered:
            self._ahead = min(self._ahead * 2, self._depth)
        while len(self._ranges) < self._ahead and self._next < self._size:
            end = min(self._next + self._step, self._size)
            self._ranges.append((self._next, end, self._fetch(self._next, end)))
            self._next, self._step = end, min(self._step * 2, self._chunk)
        start, end, future = self._ranges[0]
        data = future.result()
        if len(data) != end - start:
            raise CheckpointError(f"the store returned {len(data)} bytes for a range of {end - start}; the object changed")
        return start, data

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed file")
        view = memoryview(buffer).cast("B")
        n = 0
        while n < len(view) and self._pos < self._size:
            start, data = self._range_at(self._pos)
            offset = self._pos - start
            take = min(len(view) - n, len(data) - offset)
            view[n : n + take] = memoryview(data)[offset : offset + take]
            n += take
            self._pos += take
        return n

    def read(self, size: int = -1) -> bytes:
        remaining = max(self._size - self._pos, 0)
        size = remaining if size is None or size < 0 else min(size, remaining)
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf) if n == size else bytes(buf[:n])

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        self._drop()
        super().close()


# ----------------------------------------------------------------------------- registration


def _open(url: str, storage_options: dict) -> Storage:
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "file" and not storage_options:
        from ember.checkpoint.storage import LocalStorage

        return LocalStorage(rest)
    return FsspecStorage(url, storage_options)


register_scheme("default", _open)
