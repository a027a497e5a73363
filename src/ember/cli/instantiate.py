"""Helpers of ``lightning.pytorch.cli`` that need no argument parser: building classes from config dicts,
and a ``ReduceLROnPlateau`` that knows what it monitors."""

from __future__ import annotations

import importlib
from typing import Any

import torch


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ``ReduceLROnPlateau`` with the metric it watches, so a CLI config can name it.

    Args:
        optimizer: the optimizer whose learning rate it lowers.
        monitor: the logged metric to watch (e.g. ``"val_loss"``).
        *args: passed to torch's ``ReduceLROnPlateau``.
        **kwargs: passed to torch's ``ReduceLROnPlateau`` (``mode``, ``factor``, ``patience``...).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, monitor: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, *args, **kwargs)
        self.monitor = monitor


def _resolve(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        raise ValueError(f"class_path must be a dotted path like 'torch.optim.Adam'; received {class_path!r}.")
    return getattr(importlib.import_module(module_name), name)


def instantiate_class(args: Any | tuple[Any, ...], init: dict[str, Any]) -> Any:
    """Build ``init["class_path"]`` with ``args`` first and ``init["init_args"]`` as keywords.

    Args:
        args: the positional argument, or a tuple of them (an optimizer's parameters, a scheduler's optimizer).
        init: ``{"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}}``.
    """
    if "class_path" not in init:
        raise ValueError(f"init must have a 'class_path' entry; received keys {sorted(init)}.")
    positional = args if isinstance(args, tuple) else (args,)
    return _resolve(init["class_path"])(*positional, **dict(init.get("init_args", {})))


def instantiate_module(class_type: type, config: dict[str, Any]) -> Any:
    """Build ``class_type`` (or the subclass ``config["class_path"]`` names) from ``config``'s values.

    Args:
        class_type: the class expected (e.g. your LightningModule's base).
        config: ``{"class_path": ..., "init_args": {...}}``, or the keyword arguments themselves.
    """
    if "class_path" in config:
        cls = _resolve(config["class_path"])
        if not (isinstance(cls, type) and issubclass(cls, class_type)):
            raise TypeError(f"{config['class_path']} is not a subclass of {class_type.__name__}.")
        return cls(**dict(config.get("init_args", {})))
    return class_type(**config)


__all__ = ["ReduceLROnPlateau", "instantiate_class", "instantiate_module"]
