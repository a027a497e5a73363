"""CSVLogger: every logged metric in ``<save_dir>/<name>/version_N/metrics.csv`` and the
hyperparameters in ``hparams.yaml`` next to it (a local folder or a URL: the files go through the
same storage as checkpoints)."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Mapping

from ember.checkpoint.storage.locations import Storage, open_store
from ember.distributed import rank_zero_only
from ember.loggers.base import Logger, next_version, params_dict
from ember.loggers.yaml_text import dump_yaml


class CSVLogger(Logger):
    """One row per logged step or epoch; columns grow as new metrics appear. Each flush rewrites
    ``metrics.csv`` atomically, so the file is always complete, on object stores too. Rows are
    written every ``flush_logs_every_n_steps`` rows and whenever the Trainer saves (each epoch's end).

    Args:
        save_dir: the root folder (or URL) of the logs (default the current folder).
        name: the experiment's folder under ``save_dir``; None or "" writes the versions in ``save_dir``.
        version: the run's version: an int (``version_<n>``), a string (the folder's name), or None for the
            next free number.
        prefix: put ``<prefix>-`` before every metric name.
        flush_logs_every_n_steps: write the file every this many rows (at least 1, else ``ValueError``).
        storage_options: options for the backend of a URL.
    """

    def __init__(self, save_dir: str | os.PathLike = ".", name: str | None = "lightning_logs",
                 version: int | str | None = None, prefix: str = "", flush_logs_every_n_steps: int = 100,
                 storage_options: dict | None = None) -> None:
        if flush_logs_every_n_steps < 1:
            raise ValueError(f"flush_logs_every_n_steps must be at least 1; received {flush_logs_every_n_steps}")
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._storage_options = storage_options
        self._store: Storage | None = None
        self._version = version
        self._prefix = prefix
        self._every = flush_logs_every_n_steps
        self._rows: list[dict[str, Any]] = []
        self._flushed = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root(self) -> str:
        return self.root_dir

    @property
    def store(self) -> Storage:
        """The storage of ``<save_dir>/<name>``, which holds every version's folder."""
        if self._store is None:
            self._store = open_store(self.root_dir, self._storage_options)
        return self._store

    @property
    def version(self) -> int | str:
        """The version given, or the next free one: one more than the highest ``version_N`` there."""
        if self._version is None:
            self._version = next_version(self.root_dir, self._storage_options)
        return self._version

    @property
    def _folder(self) -> str:
        v = self.version
        return v if isinstance(v, str) else f"version_{v}"

    @property
    def metrics_file(self) -> str:
        return f"{self.log_dir}/metrics.csv"

    @property
    def metrics_file_path(self) -> str:
        """The path of ``metrics.csv`` (Lightning's name for :attr:`metrics_file`)."""
        return self.metrics_file

    @property
    def experiment(self) -> "CSVLogger":
        return self

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, epoch: int | None = None) -> None:
        """Add one row to ``metrics.csv`` (written every ``flush_logs_every_n_steps`` rows).

        Args:
            metrics: metric names to values (numbers or scalar tensors).
            step: the row's step (None: the row's number).
            epoch: the row's epoch, or None.
        """
        if not metrics:
            return
        row: dict[str, Any] = {}
        if epoch is not None:
            row["epoch"] = epoch
        row["step"] = step if step is not None else len(self._rows)
        for k, v in metrics.items():
            key = k if k in ("epoch", "step") or not self._prefix else f"{self._prefix}-{k}"
            row[key] = float(v) if hasattr(v, "__float__") and not isinstance(v, (int, float)) else v
        self._rows.append(row)
        if len(self._rows) - self._flushed >= self._every:
            self.save()

    @rank_zero_only
    def log_hyperparams(self, params: Any = None, *args: Any, **kwargs: Any) -> None:
        values = params_dict(params)
        with self.store.open_write(f"{self._folder}/hparams.yaml") as f:
            f.write(dump_yaml(values).encode("utf-8"))

    @rank_zero_only
    def save(self) -> None:
        """Write the rows logged so far (nothing when no new row came)."""
        if len(self._rows) == self._flushed:
            return
        columns = [c for c in ("epoch", "step") if any(c in r for r in self._rows)]
        for row in self._rows:
            columns += [k for k in row if k not in columns]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self._rows)
        with self.store.open_write(f"{self._folder}/metrics.csv") as f:
            f.write(text.getvalue().encode("utf-8"))
        self._flushed = len(self._rows)

    flush = save


class ExperimentWriter:
    """Lightning's writer behind a CSV logger: collects metric rows and hyperparameters, and writes
    ``metrics.csv`` and ``hparams.yaml`` into ``log_dir`` on :meth:`save`.

    Args:
        log_dir: the folder to write into (made when missing).
    """

    NAME_HPARAMS_FILE = "hparams.yaml"
    NAME_METRICS_FILE = "metrics.csv"

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir = os.fspath(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        self.metrics: list[dict[str, Any]] = []
        self.hparams: dict[str, Any] = {}
        self.metrics_file_path = os.path.join(self.log_dir, self.NAME_METRICS_FILE)

    def log_hparams(self, params: Mapping[str, Any]) -> None:
        """Record hyperparameters (written to ``hparams.yaml`` by :meth:`save`).

        Args:
            params: names and values.
        """
        self.hparams.update(params_dict(params))

    def log_metrics(self, metrics_dict: Mapping[str, Any], step: int | None = None) -> None:
        """Record one row of metrics.

        Args:
            metrics_dict: names and values (tensors become floats).
            step: the row's ``step`` column; the row count when None.
        """
        row = {k: float(v) if hasattr(v, "item") else v for k, v in metrics_dict.items()}
        row["step"] = len(self.metrics) if step is None else step
        self.metrics.append(row)

    def save(self) -> None:
        """Write ``hparams.yaml`` and ``metrics.csv`` (columns: every name seen, in order of appearance)."""
        with open(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), "w", encoding="utf-8") as f:
            f.write(dump_yaml(self.hparams))
        if not self.metrics:
            return
        columns: list[str] = []
        for row in self.metrics:
            columns += [k for k in row if k not in columns]
        with open(self.metrics_file_path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.metrics)
