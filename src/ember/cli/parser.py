"""LightningCLI's parser: ``jsonargparse.ArgumentParser`` with Lightning's additions
(``add_lightning_class_args``, ``add_optimizer_args``, ``add_lr_scheduler_args``), and the
``configure_optimizers`` that ``--optimizer``/``--lr_scheduler`` give a model.

jsonargparse is optional, so the class is built on first use (``parser_class()``)."""

from __future__ import annotations

import importlib
import types
import warnings
from typing import Any

import torch

from ember.core.callback import Callback
from ember.core.module import Module

_CLASS: type | None = None
LR_SCHEDULERS = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def parser_class() -> type:
    """The parser class (a ``jsonargparse.ArgumentParser`` subclass)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _build()
    return _CLASS


def _build() -> type:
    from jsonargparse import ArgumentParser  # deferred: optional dependency (jsonargparse)

    class LightningArgumentParser(ArgumentParser):
        """jsonargparse's parser, plus Lightning's methods for callbacks, optimizers and schedulers."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.callback_keys: list[str] = []
            self._optimizers: dict[str, tuple] = {}
            self._lr_schedulers: dict[str, tuple] = {}

        def add_lightning_class_args(self, lightning_class: Any, nested_key: str, subclass_mode: bool = False,
                                     required: bool = True) -> list[str]:
            """Arguments for a callback, module or datamodule class under ``nested_key``; a callback
            built from them joins the Trainer's callbacks."""
            classes = lightning_class if isinstance(lightning_class, tuple) else (lightning_class,)
            if any(isinstance(c, type) and issubclass(c, Callback) for c in classes):
                self.callback_keys.append(nested_key)
            if subclass_mode:
                return self.add_subclass_arguments(lightning_class, nested_key, fail_untyped=False, required=required)
            return self.add_class_arguments(lightning_class, nested_key, fail_untyped=False, sub_configs=True)

        def add_optimizer_args(self, optimizer_class: Any = (torch.optim.Optimizer,), nested_key: str = "optimizer",
                               link_to: str = "AUTOMATIC") -> None:
            """``--optimizer=Adam --optimizer.lr=...``: built with the model's parameters once it exists."""
            self._add_buildable(optimizer_class, nested_key, {"params"})
            self._optimizers[nested_key] = (optimizer_class, link_to)

        def add_lr_scheduler_args(self, lr_scheduler_class: Any = LR_SCHEDULERS, nested_key: str = "lr_scheduler",
                                  link_to: str = "AUTOMATIC") -> None:
            """``--lr_scheduler=StepLR --lr_scheduler.step_size=...``: built on the optimizer."""
            self._add_buildable(lr_scheduler_class, nested_key, {"optimizer"})
            self._lr_schedulers[nested_key] = (lr_scheduler_class, link_to)

        def _add_buildable(self, cls: Any, key: str, skip: set[str]) -> None:
            kwargs = {"instantiate": False, "fail_untyped": False, "skip": skip}
            if isinstance(cls, tuple):
                self.add_subclass_arguments(cls, key, required=False, **kwargs)
            else:
                self.add_class_arguments(cls, key, sub_configs=True, **kwargs)

    return LightningArgumentParser


def instantiate_class(args: Any, init: Any) -> Any:
    """``init`` (``{"class_path": ..., "init_args": {...}}``) built with ``args`` first (parameters, optimizer)."""
    module_name, _, name = init["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    args = args if isinstance(args, tuple) else (args,)
    return cls(*args, **dict(init.get("init_args") or {}))


def configure_optimizers(module: Any, optimizer: Any, lr_scheduler: Any = None) -> Any:
    """What a model's configure_optimizers returns for the CLI's optimizer and scheduler (Lightning's shapes)."""
    if lr_scheduler is None:
        return optimizer
    if isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        monitor = getattr(lr_scheduler, "monitor", None)
        if monitor is None:
            raise ValueError("--lr_scheduler=ReduceLROnPlateau needs a metric to monitor; use a subclass that sets "
                             "`self.monitor` (e.g. 'val_loss'), or configure it in the model's configure_optimizers.")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "monitor": monitor}}
    return [optimizer], [lr_scheduler]


def add_configure_optimizers(cli: Any, parser: Any, config_init: Any) -> None:
    """Give ``cli.model`` the optimizer (and scheduler) of ``--optimizer``/``--lr_scheduler``, if given."""
    automatic = [k for k, (_, link) in getattr(parser, "_optimizers", {}).items() if link == "AUTOMATIC"]
    schedulers = [k for k, (_, link) in getattr(parser, "_lr_schedulers", {}).items() if link == "AUTOMATIC"]
    if len(automatic) > 1 or len(schedulers) > 1:
        raise ValueError(f"LightningCLI can set up one automatic optimizer and scheduler; found optimizers "
                         f"{automatic} and schedulers {schedulers}. Link the others with link_to=.")
    optimizer_init = config_init.get(automatic[0]) if automatic else None
    if not optimizer_init:
        return
    model = cli.model
    if type(model).configure_optimizers is not Module.configure_optimizers:
        warnings.warn(f"`{type(model).__name__}.configure_optimizers` will be overridden by "
                      f"`{type(cli).__name__}.configure_optimizers`.", stacklevel=3)
    optimizer = instantiate_class(model.parameters(), optimizer_init)
    scheduler_init = config_init.get(schedulers[0]) if schedulers else None
    scheduler = instantiate_class(optimizer, scheduler_init) if scheduler_init else None
    build = cli.configure_optimizers
    model.configure_optimizers = types.MethodType(lambda self: build(self, optimizer, scheduler), model)
