"""Streaming I/O for object stores: a multipart upload that a file writer feeds part by part, and a
reader that fetches ranges ahead in parallel. Used by ``remote.FsspecStorage``."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import io
import queue
import threading
from datetime import datetime
from typing import Any, Callable

from ember.errors import CheckpointError

MiB = 1 << 20
S3_MIN_PART = 5 * MiB  # every part but the last must be at least this (S3 rule)
S3_MAX_PART = 5 << 30
S3_MAX_PARTS = 10_000


# ----------------------------------------------------------------------------- S3 streaming upload


class S3Upload(io.RawIOBase):
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
        from fsspec.asyn import sync  # deferred: optional dependency (fsspec)

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


def s3_range_getter(fs: Any, bucket: str, key: str, etag: str | None, where: str) -> Callable[[int, int], Any]:
    """``(start, end) -> future of bytes`` for one S3 object, every range pinned to the ETag seen at open."""
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


def range_getter(fs: Any, path: str) -> Callable[[int, int], Any]:
    return lambda start, end: asyncio.run_coroutine_threadsafe(fs._cat_file(path, start=start, end=end), fs.loop)


class RangeReader(io.RawIOBase):
    """A seekable read stream over ranged GETs that fetches ahead of the reader, in parallel.

    Reading from a new position (the start, or after a seek away) fetches one small range there, so a
    header read costs one small GET. While the reader goes on sequentially, each range it enters lets
    more follow: the ranges double in size up to ``chunk`` and the number in flight doubles up to
    ``depth``. Ranges behind the reader are dropped, so at most ``depth`` ranges are held.
    """

    FIRST = 1 * MiB  # the first range after opening or seeking away

    def __init__(self, fetch: Callable[[int, int], concurrent.futures.Future], size: int, chunk: int,
                 depth: int) -> None:
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
            raise CheckpointError(f"the store returned {len(data)} bytes for a range of {end - start}; "
                                  "the object changed")
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


# ----------------------------------------------------------------------------- object metadata


def timestamp(value: Any) -> float | None:
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


def mtime(info: dict) -> float:
    for key in ("LastModified", "mtime", "last_modified", "updated", "modified", "created", "creation_time"):
        t = timestamp(info.get(key))
        if t is not None:
            return t
    return 0.0
