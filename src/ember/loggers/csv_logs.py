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
from ember.loggers.base import Logger, params_dict
from ember.loggers.yaml_text import dump_yaml


class CSVLogger(Logger):
    """One row per logged step or epoch; columns grow as new metrics appear. Each flush rewrites
    ``metrics.csv`` atomically, so the file is always complete, on object stores too. Rows are
    written every ``flush_logs_every_n_steps`` rows and whenever the Trainer saves (each epoch's end)."""

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
            versions = [n.split("/", 1)[0][len("version_"):] for n in self.store.list("version_")]
            self._version = max((int(v) for v in versions if v.isdigit()), default=-1) + 1
        return self._version

    @property
    def _folder(self) -> str:
        v = self.version
        return v if isinstance(v, str) else f"version_{v}"

    @property
    def metrics_file(self) -> str:
        return f"{self.log_dir}/metrics.csv"

    @property
    def experiment(self) -> "CSVLogger":
        return self

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, epoch: int | None = None) -> None:
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
