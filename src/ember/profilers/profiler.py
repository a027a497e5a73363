"""Profiler: the base class of ember's profilers (Lightning's API: start/stop an action, a summary).

The Trainer calls ``setup(stage, local_rank, log_dir)`` before a stage, ``start(action)`` and
``stop(action)`` around each hook, step and batch it profiles, and ``describe()`` at the stage's end:
the summary goes to ``<dirpath>/<stage>-<filename>.txt`` when ``filename`` is given (``dirpath``
defaults to the Trainer's ``log_dir``), else to standard output."""

from __future__ import annotations

import os
import re
import sys
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO


class Profiler(ABC):
    """Subclass it and define ``start(action_name)``, ``stop(action_name)`` and ``summary()``.

    Args:
        dirpath: folder of the report file; ``None`` uses the Trainer's ``log_dir`` (given to ``setup``).
        filename: name part of the report file ``<dirpath>/<stage>-<filename>.txt``; ``None`` prints the
            report to standard output instead.
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None) -> None:
        self.dirpath = dirpath
        self.filename = filename
        self._output_file: TextIO | None = None
        self._write_stream: Callable[[str], Any] | None = None
        self._local_rank: int | None = None
        self._stage: str | None = None

    @abstractmethod
    def start(self, action_name: str) -> None:
        """Start recording ``action_name``.

        Args:
            action_name: the name of the action (hook, step or block) being timed.
        """

    @abstractmethod
    def stop(self, action_name: str) -> None:
        """Stop recording ``action_name`` (started by ``start``).

        Args:
            action_name: the name given to the matching ``start`` call.
        """

    def summary(self) -> str:
        """The report ``describe()`` writes."""
        return ""

    @contextmanager
    def profile(self, action_name: str) -> Iterator[str]:
        """``with profiler.profile("load data"): ...`` records the block as one call of the action.

        Args:
            action_name: the name of the action; the ``with`` statement yields it back.
        """
        self.start(action_name)
        try:
            yield action_name
        finally:
            self.stop(action_name)

    @property
    def local_rank(self) -> int:
        return 0 if self._local_rank is None else self._local_rank

    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        """Called by the Trainer before ``stage`` ("fit", "validate", "test" or "predict") runs.

        Args:
            stage: the stage about to run; it prefixes the report's file name and title.
            local_rank: this process's rank on its node (``None``: a single process); only rank 0 prints.
            log_dir: the Trainer's log folder, used as ``dirpath`` when none was given.
        """
        self._stage, self._local_rank = stage, local_rank
        self.dirpath = self.dirpath or log_dir

    def teardown(self, stage: str | None) -> None:
        """Close the report file, if one is open.

        Args:
            stage: the stage that ended (``None`` when not known, e.g. at garbage collection).
        """
        self._write_stream = None
        if self._output_file is not None:
            self._output_file.close()
            self._output_file = None

    def describe(self) -> None:
        """Write the summary (to the report file, or standard output on local rank 0), then tear down."""
        self._prepare_streams()
        text = self.summary()
        if text and self._write_stream is not None:
            self._write_stream(text)
        if self._output_file is not None:
            self._output_file.flush()
        self.teardown(stage=self._stage)

    def _prepare_filename(self, action_name: str | None = None, extension: str = ".txt") -> str:
        parts = [p for p in (self._stage, self.filename, None if self._local_rank is None else str(self._local_rank),
                             action_name) if p]
        base = re.sub(r"_+", "_", re.sub(r"[\\/:*?\"<>|\n\r\t]", "_", "-".join(parts))).strip()
        return (base or "profile") + extension

    def _prepare_streams(self) -> None:
        if self._write_stream is not None:
            return
        if self.filename and self.dirpath:
            os.makedirs(self.dirpath, exist_ok=True)
            self._output_file = open(os.path.join(self.dirpath, self._prepare_filename()), "a")  # noqa: SIM115
            self._write_stream = self._output_file.write
        else:
            self._write_stream = self._print

    def _print(self, text: str) -> None:
        if self._local_rank in (None, 0):
            print(text, file=sys.stdout, flush=True)

    def _stats_to_str(self, stats: dict[str, str]) -> str:
        stage = f"{self._stage.upper()} " if self._stage is not None else ""
        lines = [stage + "Profiler Report"]
        for action, value in stats.items():
            rank = f" rank: {self._local_rank}" if self._local_rank is not None else ""
            lines += [f"Profile stats for: {action}{rank}", value]
        return os.linesep.join(lines)

    def __del__(self) -> None:
        try:
            self.teardown(stage=self._stage)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
