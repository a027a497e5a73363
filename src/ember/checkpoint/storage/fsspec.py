"""Checkpoints at fsspec URLs: ``s3://``, ``gs://``, ``az://``, ``memory://`` and any other store fsspec knows.

Importing this module registers ``FsspecStorage`` for every URL scheme that has no backend of its own
(``register_scheme("default", ...)``); ``store.open_store`` imports it on the first URL it sees. ``file://``
URLs still go to ``LocalStorage`` (fsync + rename, and a local path for mmap).

Credentials and endpoints come from each backend's own configuration (for S3: the AWS environment variables and
config files, ``AWS_ENDPOINT_URL`` included) or from ``storage_options``, spelt as fsspec spells them (``{"key":
..., "secret": ..., "endpoint_url": ...}`` for s3fs).

How a write becomes final (the name shows the previous object or the complete new one, never a part):

- **S3** (s3fs): the bytes stream up as a multipart upload while the writer produces them — parts of
  ``part_size`` bytes, up to ``concurrency`` in flight; the first part is held back until the end, so at most
  ``(concurrency + 2) * part_size`` bytes are held in memory. ``CompleteMultipartUpload`` on a clean exit makes
  the object appear whole; an exception aborts the upload. A file no larger than one part is a single PUT. A
  writer killed outright leaves an incomplete multipart upload: never listed or readable, but stored (and
  billed) until aborted — ``cleanup()`` aborts those older than an age, as does an S3 lifecycle rule
  ``AbortIncompleteMultipartUpload``. ``copy`` is server-side (``CopyObject``; parallel ``UploadPartCopy`` above
  5 GiB), so ``last.ckpt`` is a real object.
- **Every other store**: the bytes go to a temporary name (``temporaries.temp_name``: the same ``.ember-
  tmp-...part`` spelling as local temporaries) next to the target, which is then moved onto the target. On
  ``memory://`` and ``file://`` the move is a rename (atomic). On ``gs://`` and ``az://`` fsspec moves by a
  server-side copy and a delete: the target appears whole (object creation is atomic there) but the bytes are
  copied once more inside the store. A killed writer leaves the temporary, which ``list`` hides and
  ``cleanup()`` removes.

Writers on S3 are seekable within the held-back first part and the part being filled (cheap: no bytes are re-
sent), which is what ember's format writer needs to fill in the header's checksums at the end while the tensors
stream up. Writers of gs:// and az:// (fsspec's buffered files) are not seekable; the format writer then
checksums first and streams once. Readers of remote (async) stores stream over ranged GETs: a first range of 1
MiB (a header read costs one small GET), then, while reads stay sequential, ranges that double up to
``read_chunk`` bytes with up to ``read_ahead`` in flight at once (so at most ``read_ahead * read_chunk`` bytes
held). On S3 every range is pinned to the ETag seen at open: an object replaced mid-read is an error, not a mix
of two files. Local and memory stores hand out their own file objects. Folders (``copy`` of a folder name) are
copied file by file: not atomic as a whole on any store here.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from ember.checkpoint.storage.contract import Info, Storage, register_scheme
from ember.checkpoint.storage.local import LocalStorage, check_name
from ember.checkpoint.storage.multipart import (
    S3_MAX_PARTS,
    S3_MIN_PART,
    MiB,
    RangeReader,
    S3Upload,
    mtime,
    range_getter,
    s3_range_getter,
    timestamp,
)
from ember.checkpoint.storage.temporaries import STALE_AFTER_S, TMP_PREFIX, TMP_SUFFIX, is_temporary, temp_name
from ember.errors import CheckpointError, MisconfigurationError

__all__ = ["FsspecStorage", "TMP_PREFIX", "TMP_SUFFIX"]

S3_MAX_COPY = 5 << 30  # the largest object one CopyObject call copies
MARKER = "metadata.json"  # a sharded folder's commit marker, its last-written object (sharded/layout.py)

# scheme -> (package, extra) for the error that names what to install
_EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
           "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure")}


def _missing_backend(scheme: str, url: str, detail: str = "") -> ImportError:
    package, extra = _EXTRAS.get(scheme, (None, "fsspec"))
    if package:
        text = f'{scheme}:// URLs need the {package} package (received {url!r}): pip install "ember-train[{extra}]"'
    else:
        text = (f'{scheme}:// URLs need fsspec and the package it names for them (received {url!r}): '
                'pip install "ember-train[fsspec]"')
    if detail:
        text += f" ({detail})"
    return ImportError(text, name=package or "fsspec")


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
            import fsspec  # deferred: optional dependency (fsspec)
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
            raise MisconfigurationError(f"part_size must be at least 5 MiB (an S3 rule); "
                                        f"received part_size={part_size}")
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
        return sorted(n for n in names if n and n.startswith(prefix) and not n.endswith("/") and not is_temporary(n))

    def _info(self, name: str) -> dict:
        """fsspec's info on the object ``name``: FileNotFoundError when missing, IsADirectoryError for a folder."""
        check_name(name)
        path = self._path(name)
        if is_temporary(name):
            raise FileNotFoundError(f"no object {self.describe(name)}")
        self._fresh(path)
        info = self.fs.info(path)
        if info.get("type") != "file":
            raise IsADirectoryError(f"{self.describe(name)} is a folder, not an object")
        return info

    def stat(self, name: str) -> Info:
        info = self._info(name)
        return Info(name, int(info["size"]), mtime(info))

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
        """A file: one atomic copy (server-side where the store has it). A folder: file by file, not
        atomic as a whole: ``dst``'s commit marker is deleted first, what the old ``dst`` held beyond
        ``src``'s files is removed, and ``src``'s marker is copied last."""
        check_name(dst)
        try:
            size = self._info(src)["size"]
        except IsADirectoryError:
            self._copy_folder(src, dst)
            return
        self._copy_file(src, dst, size)

    def _copy_folder(self, src: str, dst: str) -> None:
        """``dst``'s commit marker (``MARKER``) goes first, ``src``'s is copied last: see ``copy``."""
        names = sorted((n[len(src) + 1 :] for n in self.list(src.rstrip("/") + "/")), key=lambda n: n == MARKER)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(f"{dst}/{MARKER}"))
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            sizes = list(pool.map(lambda n: self._info(f"{src}/{n}")["size"], names))
            copy = lambda n, size: self._copy_file(f"{src}/{n}", f"{dst}/{n}", size)  # noqa: E731
            list(pool.map(copy, names[:-1] if names[-1:] == [MARKER] else names, sizes))
        stale = set(self.list(dst.rstrip("/") + "/")) - {f"{dst}/{n}" for n in names}
        if stale:
            self.fs.rm([self._path(n) for n in sorted(stale)])
        if names[-1:] == [MARKER]:
            copy(MARKER, sizes[-1])
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
                tmp = self._path(temp_name(dst))
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
            writer = S3Upload(self.fs, bucket, key, self.part_size, self.concurrency, self.describe(name))
            try:
                yield writer
            except BaseException:
                writer.abort()
                raise
            writer.complete()
            self._fresh(path)
            return
        tmp = self._path(temp_name(name))
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
                fetch = s3_range_getter(self.fs, bucket, key, info.get("ETag"), self.describe(name))
            else:
                fetch = range_getter(self.fs, path)
            reader = RangeReader(fetch, size, self.read_chunk, self.read_ahead)
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
            if not name or not is_temporary(name):
                continue
            with contextlib.suppress(FileNotFoundError):
                if mtime(self.fs.info(path)) <= cutoff:
                    self.fs.rm_file(path)
                    removed.append(name)
        if self._s3:
            removed += self._abort_stale_uploads(cutoff)
        self._fresh(self.root)
        return removed

    # ------------------------------------------------------------------ S3 specifics

    def _call(self, method: str, **kwargs: Any) -> Any:
        from fsspec.asyn import sync  # deferred: optional dependency (fsspec)

        return sync(self.fs.loop, self.fs._call_s3, method, **kwargs)

    def _abort_stale_uploads(self, cutoff: float) -> list[str]:
        bucket, key, _ = self.fs.split_path(self.root)
        prefix = key + "/" if key else ""
        removed, marker = [], {}
        while True:
            page = self._call("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **marker)
            for upload in page.get("Uploads") or []:
                started = timestamp(upload.get("Initiated"))
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
            self._call("complete_multipart_upload", Bucket=tb, Key=tk, UploadId=upload,
                       MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):
                self._call("abort_multipart_upload", Bucket=tb, Key=tk, UploadId=upload)
            raise


# ----------------------------------------------------------------------------- registration


def _open(url: str, storage_options: dict) -> Storage:
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "file" and not storage_options:
        return LocalStorage(rest)
    return FsspecStorage(url, storage_options)


register_scheme("default", _open)
