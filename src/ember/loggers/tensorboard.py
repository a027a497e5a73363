"""TensorBoardLogger: metrics and hyperparameters as TensorBoard event files in
``<save_dir>/<name>/version_N/`` (needs the ``tensorboard`` package: ``pip install 'ember-train[tensorboard]'``)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

from ember.distributed import rank_zero_only
from ember.loggers.base import Logger, flat_params, next_version, params_dict
from ember.loggers.yaml_text import dump_yaml, plain

EXTRA_HINT = "install it with `pip install 'ember-train[tensorboard]'` (or `pip install tensorboard`)"


def _require_tensorboard() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError(f"TensorBoardLogger needs the tensorboard package, which is not installed; "
                                  f"{EXTRA_HINT}.")


class TensorBoardLogger(Logger):
    """Writes through ``torch.utils.tensorboard.SummaryWriter`` (``.experiment``); extra keyword
    arguments go to it. ``default_hp_metric`` logs ``hp_metric = -1`` with the hyperparameters, so
    TensorBoard's HPARAMS tab lists the run; ``log_graph`` records the model's graph at fit start
    (from ``model.example_input_array``).

    Args:
        save_dir: the root folder of the logs.
        name: the experiment's folder under ``save_dir``; None or "" writes the versions in ``save_dir``.
        version: the run's version: an int (``version_<n>``), a string (the folder's name), or None for the
            next free number.
        log_graph: record the model's graph at fit start.
        default_hp_metric: log ``hp_metric = -1`` with the hyperparameters when no metric is given.
        prefix: put ``<prefix>-`` before every metric name.
        sub_dir: a folder inside the version's folder to write the event files to.
        **kwargs: passed to ``SummaryWriter``.

    Raises ``ModuleNotFoundError`` without the ``tensorboard`` package.
    """

    def __init__(self, save_dir: str | os.PathLike, name: str | None = "lightning_logs",
                 version: int | str | None = None, log_graph: bool = False, default_hp_metric: bool = True,
                 prefix: str = "", sub_dir: str | os.PathLike | None = None, **kwargs: Any) -> None:
        _require_tensorboard()
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._kwargs = kwargs
        self._experiment = None
        self.hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def version(self) -> int | str:
        """The version given, or the next free one in ``<save_dir>/<name>``."""
        if self._version is None:
            self._version = next_version(self.root_dir)
        return self._version

    @property
    def log_dir(self) -> str:
        base = super().log_dir
        return base if self._sub_dir is None else os.path.join(base, self._sub_dir)

    @property
    def experiment(self):
        """The ``SummaryWriter`` (created on first use, on the global-zero process)."""
        if self._experiment is None:
            from torch.utils.tensorboard import SummaryWriter  # deferred: optional dependency (tensorboard)

            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            key = f"{self._prefix}-{k}" if self._prefix else k
            self.experiment.add_scalar(key, float(v), step)

    @rank_zero_only
    def log_hyperparams(self, params: Any = None, metrics: Mapping[str, float] | None = None) -> None:
        """Save ``params`` to ``hparams.yaml`` and TensorBoard's HPARAMS tab (``metrics`` with them).

        Args:
            params: the hyperparameters: a dict or an ``argparse.Namespace``.
            metrics: metrics shown with them (None: ``hp_metric = -1`` with ``default_hp_metric``).
        """
        self.hparams.update(params_dict(params))
        os.makedirs(self.log_dir, exist_ok=True)
        with open(os.path.join(self.log_dir, "hparams.yaml"), "w", encoding="utf-8") as f:
            f.write(dump_yaml(self.hparams))
        if metrics is None and self._default_hp_metric:
            metrics = {"hp_metric": -1}
        if not metrics:
            return
        from torch.utils.tensorboard.summary import hparams  # deferred: optional dependency (tensorboard)

        flat = {k: v if isinstance(v, (bool, int, float, str)) else str(plain(v))
                for k, v in flat_params(self.hparams).items()}
        for summary in hparams(flat, dict(metrics)):
            self.experiment._get_file_writer().add_summary(summary)  # noqa: SLF001 - as add_hparams does
        self.log_metrics(metrics, 0)

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        if not self._log_graph:
            return
        example = input_array if input_array is not None else getattr(model, "example_input_array", None)
        if example is None:
            raise ValueError("log_graph=True needs an input: set model.example_input_array or pass input_array.")
        self.experiment.add_graph(model, example)

    @rank_zero_only
    def save(self) -> None:
        if self._experiment is not None:
            self._experiment.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self._experiment.flush()
            self._experiment.close()
