"""Loggers. The default, CSVLogger, writes every logged metric to <root>/logs/version_N/metrics.csv."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any


class CSVLogger:
    """One row per logged step or epoch; columns grow as new metrics appear."""

    def __init__(self, save_dir: str | os.PathLike = ".", name: str = "logs", version: int | None = None) -> None:
        self.root = Path(save_dir) / name
        self._version = version
        self._rows: list[dict[str, Any]] = []
        self._columns: list[str] = []
        self._written = 0  # rows already on disk with the current columns

    @property
    def version(self) -> int:
        if self._version is None:
            existing = [int(p.name.split("_", 1)[1]) for p in self.root.glob("version_*")
                        if p.name.split("_", 1)[1].isdigit()] if self.root.is_dir() else []
            self._version = max(existing, default=-1) + 1
        return self._version

    @property
    def log_dir(self) -> Path:
        return self.root / f"version_{self.version}"

    @property
    def metrics_file(self) -> Path:
        return self.log_dir / "metrics.csv"

    def log_metrics(self, metrics: dict[str, float], step: int, epoch: int) -> None:
        if metrics:
            self._rows.append({"epoch": epoch, "step": step, **metrics})

    def flush(self) -> None:
        """Append new rows; rewrite the file when new columns appeared."""
        new = self._rows[self._written:]
        if not new:
            return
        columns = list(self._columns)
        for row in new:
            columns += [k for k in row if k not in columns]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        rewrite = columns != self._columns or not self.metrics_file.exists()
        rows = self._rows if rewrite else new
        with open(self.metrics_file, "w" if rewrite else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            if rewrite:
                writer.writeheader()
            writer.writerows(rows)
        self._columns = columns
        self._written = len(self._rows)
