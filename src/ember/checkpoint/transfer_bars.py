"""Progress bars for saves and loads that take more than a couple of seconds (terminal only)."""

from __future__ import annotations

from typing import Any, BinaryIO

from tqdm.auto import tqdm

DELAY_S = 2.0      # no bar for saves/loads shorter than this
READ_PIECE = 64 << 20


def _bar(total: int, desc: str):
    # disable=None: no bar when stderr is not a terminal (logs, CI)
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, delay=DELAY_S,
                disable=None, leave=False, dynamic_ncols=True)


class WriteProgress:
    """A file wrapper that advances a bar as bytes are written."""

    def __init__(self, f: BinaryIO, total: int, desc: str) -> None:
        self._f, self._bar = f, _bar(total, desc)

    def write(self, data: Any) -> int:
        n = self._f.write(data)
        self._bar.update(len(memoryview(data)))
        return n

    def seekable(self) -> bool:
        return self._f.seekable()

    def fileno(self) -> int:
        return self._f.fileno()

    def flush(self) -> None:
        self._f.flush()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._bar.close()


class ReadProgress:
    """A file wrapper whose readinto reads in pieces and advances a bar."""

    def __init__(self, f: BinaryIO, total: int, desc: str) -> None:
        self._f, self._bar = f, _bar(total, desc)

    def readinto(self, view: memoryview) -> int:
        n = self._f.readinto(memoryview(view)[:READ_PIECE])
        self._bar.update(n or 0)
        return n

    def close(self) -> None:
        self._bar.close()
