"""Temporary files: how a writer names them, and which ones a later save may remove.

Temporary files are named ``.ember-tmp-<writer>-<pid>-<random>-<target>.part`` (never ``.ckpt``,
always within the 255-byte file-name limit: a long target name is cut, the random part keeps the
name unique). ``<writer>`` is a hash of this machine's boot id, its host name and the writer's PID
namespace, so a later save in the same folder removes a temporary only when it can prove the writer
is gone: same machine and namespace, PID no longer running. A temporary from another machine,
container or PID namespace sharing the folder (or from ember 0.1, whose names carry only a PID) is
removed only once it has not been modified for ``STALE_AFTER_S`` (24 hours): no save writes that
long without touching its file.

A commit onto an existing name first gives the old file a second name, a temporary (a hard link, so
the name never stops holding the old or the new checkpoint), then renames the new file into place:
the rename no longer frees the old file's blocks (0.5 s for 800 MB on ext4), and ``discard`` removes
the temporary on a background thread. A writer killed in between leaves a temporary that is never
the only copy of anything (the old file is still at its name, or superseded), so cleanup removes it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

__all__ = ["TMP_PREFIX", "TMP_SUFFIX", "STALE_AFTER_S", "clean_stale_temp_files", "is_temporary", "pid_alive",
           "temp_name",
           "writer_tag", "discard", "wait_discards"]

TMP_PREFIX = ".ember-tmp-"
TMP_SUFFIX = ".part"
STALE_AFTER_S = 24 * 3600  # temporaries of writers we cannot check are removed after this long untouched
NAME_MAX = 255  # bytes in one file name (Linux, macOS, Windows)


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


_TAG: dict[str, str] = {}


def writer_tag() -> str:
    """``w`` + 12 hex digits naming this machine's boot, host and PID namespace (not the process)."""
    if "tag" not in _TAG:
        who = "|".join((_read_text("/proc/sys/kernel/random/boot_id"), socket.gethostname(), _pid_namespace()))
        _TAG["tag"] = "w" + hashlib.blake2s(who.encode(), digest_size=6).hexdigest()
    return _TAG["tag"]


def is_temporary(name: str) -> bool:
    """Whether ``name`` (a file name, or a '/'-separated name whose last part is one) is a temporary."""
    base = name.rpartition("/")[2]
    return base.startswith(TMP_PREFIX) and base.endswith(TMP_SUFFIX)


def temp_name(target: str) -> str:
    """A unique temporary name next to ``target`` (a file name, or a '/'-separated name); its last
    part is at most NAME_MAX bytes."""
    folder, slash, base = target.rpartition("/")
    head = f"{TMP_PREFIX}{writer_tag()}-{os.getpid()}-{secrets.token_hex(4)}-"
    room = NAME_MAX - len(head) - len(TMP_SUFFIX)
    part = os.fsencode(base)[:room].decode(errors="ignore")  # cut on a character boundary
    return f"{folder}{slash}{head}{part}{TMP_SUFFIX}"


def _writer_of(name: str) -> tuple[str | None, int | None]:
    """(writer tag, pid) parsed from a temporary name; (None, pid) for ember 0.1 names."""
    fields = name[len(TMP_PREFIX):].split("-", 3)
    if len(fields) >= 3 and len(fields[0]) == 13 and fields[0][0] == "w" and fields[1].isdigit():
        return fields[0], int(fields[1])
    return None, int(fields[0]) if fields[0].isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` may be running on this machine (this process's own PID, and any PID
    that cannot be checked, count as alive: nothing of theirs is removed)."""
    if pid == os.getpid() or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False  # not a PID this system can have
    return True


def _is_stale(entry: Path) -> bool:
    tag, pid = _writer_of(entry.name)
    if tag == writer_tag() and pid is not None:
        return not pid_alive(pid)
    try:
        return time.time() - entry.lstat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def _target_of(name: str) -> str | None:
    """The target name a temporary was made for (None for ember 0.1 names)."""
    fields = name[len(TMP_PREFIX):-len(TMP_SUFFIX)].split("-", 3)
    return fields[3] if len(fields) == 4 else None


def _only_copy(entry: Path) -> bool:
    """A committed sharded checkpoint folder (its ``metadata.json`` written) whose target name holds
    nothing: what a writer killed between the two renames of the fallback publish leaves (the old and
    new checkpoints both at temporary names, ``sharded/commit.py``). Kept: it may be the only copy."""
    target = _target_of(entry.name)
    return entry.is_dir() and (entry / "metadata.json").is_file() and not (
        target and os.path.lexists(entry.parent / target))


def clean_stale_temp_files(folder: Path) -> list[Path]:
    """Remove temporary files and folders left in ``folder`` by writers that are provably gone (e.g.
    killed with -9): same machine and PID namespace with a PID no longer running, or untouched for
    ``STALE_AFTER_S``. A committed sharded folder whose target name holds nothing is kept (it may be
    the only copy of a checkpoint; see ``_only_copy``)."""
    removed = []
    try:
        entries = [p for p in Path(folder).iterdir() if is_temporary(p.name)]
    except OSError:
        return removed
    for p in entries:
        if not _is_stale(p) or _only_copy(p):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


_DISCARDER: list[ThreadPoolExecutor] = []
_PENDING: set[Future] = set()
_LOCK = threading.Lock()


def _remove_now(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass  # left for a later cleanup: the name is a temporary


DISCARD_IN_BACKGROUND = 64 * 2**20  # bytes: smaller ones are removed at once (cheaper than a hand-off)


def _size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(e.stat(follow_symlinks=False).st_size for e in os.scandir(path))
        return path.lstat().st_size
    except OSError:
        return 0


def discard(path: Path) -> None:
    """Remove the temporary ``path`` (an old checkpoint a commit moved aside): at once when it is small,
    else on a background thread, so freeing its blocks costs the caller nothing. Interpreter exit waits
    for removals in progress."""
    if _size(path) < DISCARD_IN_BACKGROUND:
        _remove_now(path)
        return
    with _LOCK:
        if not _DISCARDER:
            _DISCARDER.append(ThreadPoolExecutor(1, thread_name_prefix="ember-discard"))
        fut = _DISCARDER[0].submit(_remove_now, path)
        _PENDING.add(fut)
    fut.add_done_callback(_PENDING.discard)


def wait_discards() -> None:
    """Wait until every removal ``discard`` started has finished."""
    for fut in list(_PENDING):
        fut.result()
