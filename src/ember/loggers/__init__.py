"""Loggers (Lightning's names): ``Logger`` the interface, ``CSVLogger`` (the Trainer's default) and
``TensorBoardLogger``. ``Trainer(logger=True | False | Logger | [Logger, ...])``."""

from __future__ import annotations

import os
from typing import Any

from ember.errors import MisconfigurationError
from ember.loggers.base import Logger, LoggerGroup
from ember.loggers.csv_logs import CSVLogger
from ember.loggers.logger import DummyLogger, rank_zero_experiment
from ember.loggers.tensorboard import TensorBoardLogger
from ember import not_supported as _not_supported

globals().update(_not_supported.install("loggers"))

LightningLoggerBase = Logger  # the name in PyTorch Lightning < 1.7

__all__ = ["CSVLogger", "CometLogger", "DummyLogger", "LightningLoggerBase", "LitLogger", "Logger", "LoggerGroup",
           "MLFlowLogger", "TensorBoardLogger", "WandbLogger", "checkpoint_dir", "rank_zero_experiment",
           "resolve_loggers", "run_dir"]

DEFAULT_NAME = "logs"  # the Trainer's own CSVLogger: <default_root_dir>/logs/version_N (the README's path)


def resolve_loggers(logger: Any, default_root_dir: str | os.PathLike, storage_options: dict | None = None) -> list:
    """``Trainer(logger=...)`` -> the list of loggers: True is a CSVLogger under the root, False/None none.

    Args:
        logger: True, False, None, a Logger or a list of them; anything without ``log_metrics`` raises
            ``MisconfigurationError``.
        default_root_dir: the Trainer's root folder (the default CSVLogger writes under ``<root>/logs``).
        storage_options: options for the backend when the root is a URL.
    """
    if logger is True:
        return [CSVLogger(default_root_dir, name=DEFAULT_NAME, storage_options=storage_options)]
    if logger is False or logger is None:
        return []
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    for lg in loggers:
        if not callable(getattr(lg, "log_metrics", None)):
            raise MisconfigurationError(
                f"logger must be True, False, an ember.loggers.Logger or a list of them; received "
                f"{type(lg).__name__}. Subclass ember.loggers.Logger, or use CSVLogger / TensorBoardLogger.")
    return loggers


def checkpoint_dir(logger: Any, loggers: list, default_root_dir: str | os.PathLike) -> str:
    """Where checkpoints go when no dirpath is given: ``<default_root_dir>/checkpoints`` with the
    default logger (the seed page's path), ``<log_dir of the first logger>/checkpoints`` when loggers
    were given (Lightning's ``lightning_logs/version_N/checkpoints``).

    Args:
        logger: what ``Trainer(logger=...)`` was given.
        loggers: the loggers ``resolve_loggers`` made of it.
        default_root_dir: the Trainer's root folder.
    """
    root = os.fspath(default_root_dir)
    if logger is True or not loggers:
        return os.path.join(root, "checkpoints")
    log_dir = getattr(loggers[0], "log_dir", None)
    return os.path.join(root, "checkpoints") if log_dir is None else f"{os.fspath(log_dir).rstrip('/')}/checkpoints"


def run_dir(logger: Any, default_root_dir: str | os.PathLike) -> str:
    """``trainer.log_dir``: the first logger's ``log_dir``, else ``default_root_dir``.

    Args:
        logger: the first logger, or None.
        default_root_dir: the Trainer's root folder.
    """
    folder = getattr(logger, "log_dir", None) if logger is not None else None
    return os.fspath(folder if folder is not None else default_root_dir)
