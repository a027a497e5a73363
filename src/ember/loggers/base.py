"""Logger: the interface the Trainer writes metrics and hyperparameters to (Lightning's shape), and
the group that fans one call out to every logger of a Trainer."""

from __future__ import annotations

import os
from argparse import Namespace
from typing import Any, Mapping

import torch.distributed as dist

from ember.checkpoint.storage.locations import open_store
from ember.distributed import is_global_zero


class Logger:
    """Subclass this and define ``log_metrics`` and ``log_hyperparams``; ``name``, ``version``,
    ``save_dir`` and ``log_dir`` say where the run's files go (``<save_dir>/<name>/version_<version>``
    by default). ``save()`` is called after each epoch and at the end of fit, ``finalize(status)``
    once fit ends (``"success"`` or ``"failed"``)."""

    @property
    def name(self) -> str | None:
        return None

    @property
    def version(self) -> int | str | None:
        return None

    @property
    def save_dir(self) -> str | None:
        return None

    @property
    def root_dir(self) -> str | None:
        """``<save_dir>/<name>``: the folder holding every version of this run."""
        if self.save_dir is None:
            return None
        return _join(self.save_dir, self.name) if self.name else os.fspath(self.save_dir)

    @property
    def log_dir(self) -> str | None:
        """``<save_dir>/<name>/version_<version>`` (a version that is a string is used as is)."""
        root = self.root_dir
        if root is None:
            return None
        v = self.version
        return _join(root, v if isinstance(v, str) else f"version_{v}")

    @property
    def experiment(self) -> Any:
        """The backend object (a SummaryWriter for TensorBoard); None when there is none."""
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metric values (the base class raises ``NotImplementedError``: define it).

        Args:
            metrics: metric names to values (numbers or scalar tensors).
            step: the global step they belong to, or None.
        """
        raise NotImplementedError(f"{type(self).__name__} must define log_metrics(metrics, step=None)")

    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Record the run's hyperparameters (the base class raises ``NotImplementedError``: define it).

        Args:
            params: the hyperparameters: a dict or an ``argparse.Namespace`` (the module's ``hparams``).
            *args: extra positional arguments of a subclass's signature.
            **kwargs: extra keyword arguments of a subclass's signature.
        """
        raise NotImplementedError(f"{type(self).__name__} must define log_hyperparams(params)")

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Record the model's graph (loggers that cannot do so ignore it).

        Args:
            model: the LightningModule.
            input_array: the example input to trace it with (None: ``model.example_input_array``).
        """

    def save(self) -> None:
        """Make what was logged so far durable."""

    def finalize(self, status: str) -> None:
        """Fit ended (``status`` is ``"success"`` or ``"failed"``): write what is left.

        Args:
            status: ``"success"`` or ``"failed"``.
        """
        self.save()

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Called after a checkpoint callback saved (loggers that upload checkpoints use it).

        Args:
            checkpoint_callback: the ``ModelCheckpoint`` that saved.
        """


def _join(folder: str | os.PathLike, name: Any) -> str:
    return f"{os.fspath(folder).rstrip('/')}/{name}"


def params_dict(params: Mapping[str, Any] | Namespace | None) -> dict[str, Any]:
    """Hyperparameters as a plain dict (a Namespace's attributes, a mapping's items)."""
    if params is None:
        return {}
    if isinstance(params, Namespace):
        return dict(vars(params))
    if isinstance(params, Mapping):
        return dict(params)
    raise TypeError(f"hyperparameters must be a dict or an argparse.Namespace; received {type(params).__name__}")


def flat_params(params: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Nested dicts and Namespaces flattened to ``{"a/b": value}``."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, (Mapping, Namespace)):
            for kk, vv in flat_params(params_dict(v), sep).items():
                out[f"{k}{sep}{kk}"] = vv
        else:
            out[str(k)] = v
    return out


def agree_on_versions(loggers: list) -> None:
    """In a torch.distributed job, give every process rank 0's choice of each logger's next free
    version (ember's loggers keep it in ``_version``): listing the folder on each rank could race
    with rank 0 creating ``version_N``, and the checkpoint folder is inside it. Called on all ranks."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    for lg in loggers:
        if "_version" in vars(lg) and lg._version is None:  # noqa: SLF001
            chosen = [lg.version if dist.get_rank() == 0 else None]
            dist.broadcast_object_list(chosen, src=0)
            lg._version = chosen[0]  # noqa: SLF001


class LoggerGroup:
    """What the fit loop writes to: ``log_metrics(metrics, step, epoch)`` and ``flush()`` reach every
    logger, with the epoch added to the metrics as Lightning's loggers receive it.

    Args:
        loggers: the Trainer's loggers.
    """

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = list(loggers)

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        """Give ``metrics`` plus ``"epoch"`` to every logger's ``log_metrics``.

        Args:
            metrics: metric names to values.
            step: the global step.
            epoch: the current epoch, added to the metrics as ``"epoch"``.
        """
        for lg in self.loggers:
            lg.log_metrics({**metrics, "epoch": epoch}, step=step)

    def start_fit(self, model: Any) -> None:
        """At fit start (on every process): the processes agree on each logger's version, then every
        logger records the hyperparameters and (if it wants it) the graph.

        Args:
            model: the LightningModule being fitted (its ``hparams`` are logged).
        """
        agree_on_versions(self.loggers)
        if not is_global_zero():  # loggers write on rank 0 only
            return
        for lg in self.loggers:
            lg.log_hyperparams(model.hparams)
            log_graph = getattr(lg, "log_graph", None)
            if callable(log_graph):
                log_graph(model)

    def flush(self) -> None:
        """Call every logger's ``save``."""
        for lg in self.loggers:
            lg.save()

    def finalize(self, status: str) -> None:
        """Call every logger's ``finalize``.

        Args:
            status: ``"success"`` or ``"failed"``.
        """
        for lg in self.loggers:
            lg.finalize(status)


def next_version(root: str | os.PathLike, storage_options: dict | None = None) -> int:
    """One more than the highest ``version_N`` in ``root`` (a path or a URL), 0 when there is none; on local
    disk an empty ``version_N`` folder counts too, as in Lightning.

    Args:
        root: the logger's ``<save_dir>/<name>`` folder.
        storage_options: options for the backend when ``root`` is a URL.
    """
    root = os.fspath(root)
    if "://" in root:
        names = {n.split("/", 1)[0] for n in open_store(root, storage_options).list("version_")}
    else:
        names = set(os.listdir(root)) if os.path.isdir(root) else set()
    found = [int(n[len("version_"):]) for n in names if n.startswith("version_") and n[len("version_"):].isdigit()]
    return max(found, default=-1) + 1
