"""Helpers shared by the benchmarks: timing, statistics, files, optional imports, quiet output."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator, Sequence

MiB = 1 << 20

now = time.perf_counter


# ----------------------------------------------------------------------------- statistics

def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max) of the values."""
    vals = [v for v in values if v is not None]
    if not vals:
        raise ValueError("no values")
    return min(vals), statistics.median(vals), max(vals)


def pairwise_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Ratio of each repeat's value to the same repeat's reference (measured side by side)."""
    return [a / b for a, b in zip(num, den) if a is not None and b is not None and b > 0]


def rotated(items: Sequence, k: int) -> list:
    """The items in an order that changes with the repeat index, to spread drifting noise."""
    if not items:
        return []
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- files

def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: str | os.PathLike) -> None:
    """Delete a benchmark file and flush the deletion, so it does not land in the next measurement."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.sync()


def drop_page_cache() -> bool:
    """Flush dirty pages and drop the page cache (needs root). True if the cache was dropped."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def tensor_memoryview(t) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy."""
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_char * n).from_address(t.data_ptr())).cast("B")


def write_all(f, view: memoryview) -> None:
    """Write every byte of ``view`` to an unbuffered file (a single write() may be partial)."""
    while len(view):
        n = f.write(view)
        view = view[n:]


COLLECT = True  # --smoke turns it off: gc.collect() costs ~0.1 s once lightning is imported


def collect() -> None:
    """Free cyclic garbage (e.g. big tensors held by a finished thread) before a measurement."""
    if COLLECT:
        gc.collect()


# ----------------------------------------------------------------------------- optional peers

def optional_import(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - missing or broken: the column says so
        return None


def version_of(dist: str) -> str:
    """Installed version of a distribution, without importing it."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def lightning_pytorch():
    """Lightning's trainer package: ``lightning.pytorch`` (the unified ``lightning`` distribution) or
    ``pytorch_lightning`` (the standalone one, which ember's dev extras install); None without either."""
    return optional_import("lightning.pytorch") or optional_import("pytorch_lightning")


def lightning_io():
    """Lightning's checkpoint IO plugins module (``TorchCheckpointIO``, ``AsyncCheckpointIO``)."""
    return importlib.import_module(f"{lightning_pytorch().__name__}.plugins.io")


def lightning_available(enabled: bool = True) -> bool:
    return enabled and lightning_pytorch() is not None


# ----------------------------------------------------------------------------- quiet output

@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Send stdout/stderr (progress bars, banners) to /dev/null, at Python level and fd level, and
    silence warnings and library logging. The same for every method, so it is fair."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as null, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old_disable = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            os.close(saved_fds[0])
            os.close(saved_fds[1])
            logging.disable(old_disable)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
