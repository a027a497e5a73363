"""Loggers. The default, CSVLogger, writes every logged metric to <root>/logs/version_N/metrics.csv
(a local folder or a URL: the file goes through the same storage as checkpoints)."""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from ember.checkpoint.store import Storage, open_store


class CSVLogger:
    """One row per logged step or epoch; columns grow as new metrics appear. Each flush rewrites
    ``metrics.csv`` atomically, so the file is always complete, on object stores too."""

    def __init__(self, save_dir: str | os.PathLike = ".", name: str = "logs", version: int | None = None,
                 storage_options: dict | None = None) -> None:
        self.root = f"{os.fspath(save_dir).rstrip('/')}/{name}"
        self._storage_options = storage_options
        self._store: Storage | None = None
        self._version = version
        self._rows: list[dict[str, Any]] = []
        self._flushed = 0

    @property
    def store(self) -> Storage:
        if self._store is None:
            self._store = open_store(self.root, self._storage_options)
        return self._store

    @property
    def version(self) -> int:
        if self._version is None:
            versions = [n.split("/", 1)[0][len("version_"):] for n in self.store.list("version_")]
            self._version = max((int(v) for v in versions if v.isdigit()), default=-1) + 1
        return self._version

    @property
    def log_dir(self) -> str:
        return f"{self.root}/version_{self.version}"

    @property
    def metrics_file(self) -> str:
        return f"{self.log_dir}/metrics.csv"

    def log_metrics(self, metrics: dict[str, float], step: int, epoch: int) -> None:
        if metrics:
            self._rows.append({"epoch": epoch, "step": step, **metrics})

    def flush(self) -> None:
        """Write the rows logged so far (nothing when no new row came)."""
        if len(self._rows) == self._flushed:
            return
        columns: list[str] = []
        for row in self._rows:
            columns += [k for k in row if k not in columns]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self._rows)
        with self.store.open_write(f"version_{self.version}/metrics.csv") as f:
            f.write(text.getvalue().encode("utf-8"))
        self._flushed = len(self._rows)
