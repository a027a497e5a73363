"""Where bytes go and how a write becomes final: temp file in the target's folder, fsync, rename, fsync folder.

At every instant the target path holds either its previous complete file or the new complete one.
Temporary files end in ``.part`` (never ``.ckpt``), carry the writer's pid, and are removed by a
later save in the same folder once their writer is gone.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

from ember.errors import CheckpointError

TMP_PREFIX = ".ember-tmp-"
TMP_SUFFIX = ".part"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temp_files(folder: Path) -> list[Path]:
    """Remove temporary files left in ``folder`` by writers that no longer run (e.g. killed with -9)."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        name = p.name
        if not (name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)):
            continue
        try:
            pid = int(name[len(TMP_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


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


def _temp_path(target: Path) -> Path:
    return target.parent / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{target.name}{TMP_SUFFIX}"


def _commit(tmp: Path, target: Path) -> None:
    os.replace(tmp, target)
    fsync_dir(target.parent)


def _describe(e: OSError, target: Path) -> str:
    if e.errno == errno.ENOSPC:
        return f"no space left on the device while saving {target}; free space or save elsewhere"
    if e.errno == errno.EDQUOT:
        return f"disk quota exceeded while saving {target}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"not allowed to write {target} ({e.strerror}); choose a folder you can write to"
    return f"could not save {target}: {e}"


def atomic_write(target: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write(fileobj)`` and make it appear at ``target`` all at once.

    On any failure the temporary file is removed, ``target`` keeps whatever it held before, and the
    error is raised (an OSError becomes a CheckpointError that says what happened).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(_describe(e, target)) from e
    if target.is_dir():
        raise CheckpointError(f"cannot save a checkpoint to {target}: it is a folder; give a file path ending in .ckpt")
    clean_stale_temp_files(target.parent)
    tmp = _temp_path(target)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, target)
    except BaseException as e:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(_describe(e, target)) from e
        raise
    return target


def atomic_link(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Make ``target`` a second name of the committed file ``source`` (a real file, not a symlink),
    atomically; copies the bytes where hard links are not supported."""
    source, target = Path(source), Path(target)
    tmp = _temp_path(target)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            import shutil

            with open(source, "rb") as src, open(tmp, "xb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
                dst.flush()
                os.fsync(dst.fileno())
        _commit(tmp, target)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(_describe(e, target)) from e
        raise
    return target
