"""Storage backends: local disk (``LocalStorage``) and process memory (``MemoryStorage``, for tests).

Both implement the contract in ``contract.py``. On local disk a write becomes final by temp file in
the target's folder, fsync, ``os.replace``, fsync of the folder: at every instant the target holds
either its previous complete file or the new complete one. Temporary files are named, and removed
once their writer is provably gone, as ``temporaries.py`` describes.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from ember.checkpoint.storage.contract import Info, Storage
from ember.checkpoint.storage.renames import swap_in
from ember.checkpoint.storage.temporaries import (  # noqa: F401
    TMP_PREFIX,
    TMP_SUFFIX,
    clean_stale_temp_files,
    discard,
    is_temporary,
    temp_name,
)
from ember.errors import CheckpointError

__all__ = ["LocalStorage", "MemoryStorage", "atomic_write", "atomic_link", "clean_stale_temp_files", "TMP_PREFIX"]


# ----------------------------------------------------------------------------- local disk


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _describe(e: OSError, target: Path) -> str:
    if e.errno == errno.ENOSPC:
        return f"no space left on the device while saving {target}; free space or save elsewhere"
    if e.errno == errno.EDQUOT:
        return f"disk quota exceeded while saving {target}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"not allowed to write {target} ({e.strerror}); choose a folder you can write to"
    if e.errno == errno.ENAMETOOLONG:
        return f"could not save {target}: its name is longer than this filesystem allows; choose a shorter name"
    return f"could not save {target}: {e}"


def check_name(name: str) -> list[str]:
    """The '/'-separated parts of a store name; ValueError for absolute names, '', '.' or '..' parts."""
    parts = name.rstrip("/").split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid name {name!r} in a store: expected a relative, '/'-separated name "
                         "without '.' or '..' parts")
    return parts


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            gone = path.parent / temp_name(path.name)  # the name goes first: a kill never leaves half a folder
            os.rename(path, gone)
            shutil.rmtree(gone, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _second_name(target: Path) -> Path | None:
    """A temporary hard link to the regular file ``target`` (None when there is none or links are not
    supported): the next ``os.replace`` onto ``target`` then drops a name, not the file's blocks."""
    try:
        if not stat.S_ISREG(os.lstat(target).st_mode):
            return None
        aside = target.parent / temp_name(target.name)
        os.link(target, aside, follow_symlinks=False)
        return aside
    except OSError:
        return None


def replace_file(src: Path, target: Path) -> None:
    """``os.replace(src, target)`` then an fsync of the folder; an old file at ``target`` is freed on a
    background thread (``temporaries.discard``), not inside the rename."""
    aside = _second_name(target)
    try:
        os.replace(src, target)
        fsync_dir(target.parent)
    finally:
        if aside is not None:
            discard(aside)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        with open(src, "rb") as a, open(dst, "xb") as b:
            shutil.copyfileobj(a, b, 16 << 20)
            b.flush()
            os.fsync(b.fileno())


SHARDED_METADATA = "metadata.json"  # ember.checkpoint.sharded.layout.METADATA (imported there: no cycle here)
def _check_replaceable(target: Path) -> None:
    """A file may be saved at ``target`` unless it is a folder other than a sharded checkpoint (one with
    its commit marker, ``metadata.json``)."""
    if target.is_dir() and not target.is_symlink():
        if not (target / SHARDED_METADATA).is_file():
            raise CheckpointError(f"cannot save a checkpoint to {target}: it is a folder (not a sharded checkpoint); "
                                  "give a file path ending in .ckpt")


def _put_file(tmp: Path, target: Path) -> None:
    """``os.replace(tmp, target)``, also where ``target`` is a sharded checkpoint folder (``last.ckpt/``
    of an FSDP run, resumed in one process in the same dirpath): the file takes the name and the folder
    is removed. Linux swaps the two names atomically (``renameat2(RENAME_EXCHANGE)``), so the name holds
    the old or the new checkpoint at every instant; elsewhere the folder is moved aside first, as the
    sharded commit's fallback does (a kill between the renames leaves both at temporary names)."""
    if not (target.is_dir() and not target.is_symlink()):
        replace_file(tmp, target)
        return
    _check_replaceable(target)
    old = swap_in(tmp, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)  # the new file is in place; a leftover is removed by cleanup()


class LocalStorage(Storage):
    """Files under a local folder ``root``; names with '/' are files in sub-folders (created on write)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name))

    @contextlib.contextmanager
    def open_write(self, name: str) -> Iterator[BinaryIO]:
        target = self._path(name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(_describe(e, target)) from e
        _check_replaceable(target)
        clean_stale_temp_files(target.parent)
        tmp = target.parent / temp_name(target.name)
        try:
            with open(tmp, "xb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            _put_file(tmp, target)
        except BaseException as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(e, OSError):
                raise CheckpointError(_describe(e, target)) from e
            raise

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[tuple[BinaryIO, int]]:
        path = self._path(name)
        mode = os.stat(path).st_mode  # FileNotFoundError when missing
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "it is a folder", str(path))
        if not stat.S_ISREG(mode):  # a FIFO or a device: never opened, it could block
            raise OSError(errno.EINVAL, "it is not a regular file", str(path))
        with open(path, "rb", buffering=0) as f:
            yield f, os.fstat(f.fileno()).st_size

    def list(self, prefix: str = "") -> list[str]:
        folder = prefix.rpartition("/")[0]
        start = self._path(folder) if folder else self.root
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not is_temporary(d)]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for f in filenames:
                name = f if rel == "." else f"{rel}/{f}"
                if not is_temporary(f) and name.startswith(prefix):
                    found.append(name)
        return sorted(found)

    def stat(self, name: str) -> Info:
        path = self._path(name)
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "it is a folder", str(path))
        return Info(name, st.st_size, st.st_mtime)

    def delete(self, name: str) -> None:
        _remove(self._path(name))

    def copy(self, src: str, dst: str) -> None:
        """A hard link where the filesystem has them (no bytes copied), else a copy; folders file by file."""
        source, target = self._path(src), self._path(dst)
        is_dir = stat.S_ISDIR(os.stat(source).st_mode)  # FileNotFoundError when missing
        tmp = target.parent / temp_name(target.name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if is_dir:
                shutil.copytree(source, tmp, copy_function=lambda a, b: _link_or_copy(Path(a), Path(b)),
                                ignore=lambda _, names: [n for n in names if is_temporary(n)])
                self._replace_folder(tmp, target)
                fsync_dir(target.parent)
            else:
                _check_replaceable(target)
                _link_or_copy(source, tmp)
                _put_file(tmp, target)
        except BaseException as e:
            with contextlib.suppress(OSError):
                _remove(tmp)
            if isinstance(e, OSError):
                raise CheckpointError(_describe(e, target)) from e
            raise

    @staticmethod
    def _replace_folder(tmp: Path, target: Path) -> None:
        """Put the complete folder ``tmp`` at ``target``; an old ``target`` is moved aside, then removed."""
        old = None
        if target.is_dir() and not target.is_symlink():
            old = target.parent / temp_name(target.name)
            os.replace(target, old)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(tmp, target)
        if old is not None:
            discard(old)

    def describe(self, name: str = "") -> str:
        return str(self._path(name)) if name else str(self.root)

    def cleanup(self) -> list[str]:
        """Remove the temporaries that writers killed mid-save left anywhere under the root: the
        temporary files of single-file saves and the temporary folders of sharded saves, each once its
        writer is provably gone (``temporaries.py``: this machine and PID namespace with its PID no
        longer running, or untouched for ``STALE_AFTER_S``). A running writer's are left alone.
        Returns the names removed, relative to the root."""
        removed = []
        for dirpath, dirnames, _ in os.walk(self.root):  # nothing when the root does not exist yet
            dirnames[:] = [d for d in dirnames if not is_temporary(d)]  # a temporary is removed whole, or kept
            removed += [p.relative_to(self.root).as_posix() for p in clean_stale_temp_files(Path(dirpath))]
        return sorted(removed)

    def local_path(self, name: str) -> Path | None:
        return self._path(name)


# ----------------------------------------------------------------------------- memory


class MemoryStorage(Storage):
    """Objects in a dict of this process (for unit tests): same contract, no disk."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStorage({len(self._objects)} objects)"

    def _is_folder(self, name: str) -> bool:
        return any(k.startswith(name + "/") for k in self._objects)

    def _get(self, name: str) -> tuple[bytes, float]:
        check_name(name)
        with self._lock:
            if name in self._objects:
                return self._objects[name]
            if self._is_folder(name):
                raise IsADirectoryError(errno.EISDIR, "it is a folder", self.describe(name))
        raise FileNotFoundError(errno.ENOENT, "no such object", self.describe(name))

    @contextlib.contextmanager
    def open_write(self, name: str) -> Iterator[BinaryIO]:
        check_name(name)
        if self._is_folder(name):
            raise CheckpointError(f"cannot save a checkpoint to {self.describe(name)}: it is a folder; "
                                  "give a file name ending in .ckpt")
        buf = io.BytesIO()
        yield buf
        with self._lock:
            self._objects[name] = (buf.getvalue(), time.time())

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[tuple[BinaryIO, int]]:
        data, _ = self._get(name)
        yield io.BytesIO(data), len(data)

    def list(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self._objects if k.startswith(prefix))

    def stat(self, name: str) -> Info:
        data, mtime = self._get(name)
        return Info(name, len(data), mtime)

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            for k in [k for k in self._objects if k == name or k.startswith(name + "/")]:
                del self._objects[k]

    def copy(self, src: str, dst: str) -> None:
        check_name(dst)
        with self._lock:
            if src in self._objects:
                self._objects[dst] = (self._objects[src][0], time.time())
                return
            inside = {k[len(src) + 1:]: v for k, v in self._objects.items() if k.startswith(src + "/")}
            if not inside:
                raise FileNotFoundError(errno.ENOENT, "no such object", self.describe(src))
            for k in [k for k in self._objects if k == dst or k.startswith(dst + "/")]:
                del self._objects[k]
            self._objects.update({f"{dst}/{k}": (data, time.time()) for k, (data, _) in inside.items()})

    def describe(self, name: str = "") -> str:
        return f"memory://{name}"


# ----------------------------------------------------------------------------- path-based helpers


def atomic_write(target: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write(fileobj)`` and make it appear at ``target`` all at once.

    On any failure the temporary file is removed, ``target`` keeps whatever it held before, and the
    error is raised (an OSError becomes a CheckpointError that says what happened).
    """
    target = Path(target)
    with LocalStorage(target.parent).open_write(target.name) as f:
        write(f)
    return target


def atomic_link(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Make ``target`` a second name of the committed file ``source`` (a real file, not a symlink),
    atomically; copies the bytes where hard links are not supported."""
    source, target = Path(source), Path(target)
    root = Path(os.path.commonpath([os.path.abspath(source.parent), os.path.abspath(target.parent)]))
    rel = [Path(os.path.relpath(os.path.abspath(p), root)).as_posix() for p in (source, target)]
    try:
        LocalStorage(root).copy(rel[0], rel[1])
    except FileNotFoundError as e:
        raise CheckpointError(f"could not save {target}: {source} does not exist ({e.strerror})") from e
    return target
