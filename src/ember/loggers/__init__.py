"""Loggers (Lightning's names): ``Logger`` the interface, ``CSVLogger`` and
``TensorBoardLogger`` (the Trainer's default when tensorboard is installed). ``Trainer(logger=True | False |
Logger | [Logger, ...])``."""

from __future__ import annotations

import importlib.util
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
           "MLFlowLogger", "TensorBoardLogger", "WandbLogger", "checkpoint_dir", "default_logger",
           "rank_zero_experiment",
           "resolve_loggers", "run_dir"]

DEFAULT_NAME = "lightning_logs"  # the Trainer's own logger: <default_root_dir>/lightning_logs/version_N (Lightning's)


def default_logger(default_root_dir: str | os.PathLike, storage_options: dict | None = None) -> Logger:
    """``Trainer(logger=True)``: Lightning's default, a TensorBoardLogger under ``lightning_logs/version_N/``
    when tensorboard is installed, a CSVLogger there otherwise (and for remote folders: it writes through
    fsspec, TensorBoard's writer does not take ``storage_options``).

    Args:
        default_root_dir: the Trainer's root folder (a path or a URL).
        storage_options: options for the backend when the root is a URL.
    """
    root = os.fspath(default_root_dir)
    if "://" not in root and importlib.util.find_spec("tensorboard") is not None:
        return TensorBoardLogger(root, name=DEFAULT_NAME)
    return CSVLogger(root, name=DEFAULT_NAME, storage_options=storage_options)


def resolve_loggers(logger: Any, default_root_dir: str | os.PathLike, storage_options: dict | None = None) -> list:
    """``Trainer(logger=...)`` -> the list of loggers: True is ``default_logger``, False/None none.

    Args:
        logger: True, False, None, a Logger or a list of them; anything without ``log_metrics`` raises
            ``MisconfigurationError``.
        default_root_dir: the Trainer's root folder (the default logger writes under
            ``<root>/lightning_logs``).
        storage_options: options for the backend when the root is a URL.
    """
    if logger is True:
        return [default_logger(default_root_dir, storage_options)]
    if logger is False or logger is None:
        return []
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    for lg in loggers:
        if not callable(getattr(lg, "log_metrics", None)):
            raise MisconfigurationError(
                f"logger must be True, False, an ember.loggers.Logger or a list of them; received "
                f"{type(lg).__name__}. Subclass ember.loggers.Logger, or use CSVLogger / TensorBoardLogger.")
    return loggers


def checkpoint_dir(loggers: list, default_root_dir: str | os.PathLike) -> str:
    """THE default checkpoint folder (a ModelCheckpoint without ``dirpath``; ``ckpt_path="last"``), as
    Lightning places it: ``<save_dir>/<name>/<version>/checkpoints`` of the first logger (the default
    logger's ``lightning_logs/version_N/checkpoints``), ``<default_root_dir>/checkpoints`` without loggers.

    Args:
        loggers: the Trainer's loggers (``resolve_loggers``).
        default_root_dir: the Trainer's root folder.
    """
    root = os.fspath(default_root_dir)
    if not loggers:
        return _join(root, "checkpoints")
    first = loggers[0]
    save_dir = getattr(first, "save_dir", None)
    save_dir = root if save_dir is None else os.fspath(save_dir)
    version = getattr(first, "version", None)
    version = version if isinstance(version, str) else f"version_{version}"
    name = getattr(first, "name", None)
    parts = [str(name)] if name else []  # Lightning's os.path.join drops an empty name
    return _join(save_dir, *parts, version, "checkpoints")


def earlier_checkpoint_dirs(loggers: list) -> list[str]:
    """The checkpoint folders of the first logger's earlier versions, newest first
    (``lightning_logs/version_1/checkpoints``, ``version_0/...``): where ``ckpt_path="last"`` looks when
    this run's own folder (a new version) holds none, so a new process resumes the run it replaces."""
    if not loggers or not isinstance(getattr(loggers[0], "version", None), int):
        return []
    first = loggers[0]
    save_dir, name = getattr(first, "save_dir", None), getattr(first, "name", None)
    if save_dir is None or "://" in os.fspath(save_dir):
        return []
    root = os.path.join(os.fspath(save_dir), str(name)) if name else os.fspath(save_dir)
    found = [int(n[len("version_"):]) for n in (os.listdir(root) if os.path.isdir(root) else [])
             if n.startswith("version_") and n[len("version_"):].isdigit()]
    return [os.path.join(root, f"version_{v}", "checkpoints") for v in sorted(found, reverse=True)
            if v != first.version]


def _join(root: str, *parts: str) -> str:
    """os.path.join for local folders; '/' for URLs (s3://bucket/...)."""
    if "://" in root:
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(root, *parts)


def run_dir(logger: Any, default_root_dir: str | os.PathLike) -> str:
    """``trainer.log_dir``: the first logger's ``log_dir``, else ``default_root_dir``.

    Args:
        logger: the first logger, or None.
        default_root_dir: the Trainer's root folder.
    """
    folder = getattr(logger, "log_dir", None) if logger is not None else None
    return os.fspath(folder if folder is not None else default_root_dir)
