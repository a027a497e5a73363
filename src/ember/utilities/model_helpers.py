"""``lightning.pytorch.utilities.model_helpers``: whether a subclass overrides a hook; torchvision models by name."""

from __future__ import annotations

import functools
from typing import Any

from ember.core.callback import Callback
from ember.core.datamodule import LightningDataModule
from ember.core.module import LightningModule


def _underlying(fn: Any) -> Any:
    """The plain function behind a method, a ``functools.partial`` or a ``functools.wraps`` wrapper."""
    fn = getattr(fn, "__func__", fn)
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__wrapped__", fn)


def is_overridden(method_name: str, instance: object | None = None, parent: type | None = None) -> bool:
    """Whether ``instance``'s class defines ``method_name`` differently from ``parent``.

    Args:
        method_name: the method, e.g. ``"validation_step"``.
        instance: the object to ask about (a module, datamodule or callback); None gives False.
        parent: the base class to compare with; by default the ember base class it derives from
            (LightningModule, LightningDataModule or Callback).

    A method the parent does not define (ember's LightningModule leaves ``validation_step`` undefined) counts
    as overridden when the instance has it.
    """
    if instance is None:
        return False
    if parent is None:
        parent = next((p for p in (LightningModule, LightningDataModule, Callback) if isinstance(instance, p)), None)
        if parent is None:
            raise ValueError(f"is_overridden: {type(instance).__name__} is not a LightningModule, LightningDataModule "
                             "or Callback; pass parent= the class to compare with.")
    own = getattr(type(instance), method_name, None)
    if own is None:
        return False
    base = getattr(parent, method_name, None)
    if base is None:
        return True
    return _underlying(own) is not _underlying(base)


def get_torchvision_model(model_name: str, **kwargs: Any) -> Any:
    """A torchvision model by name (``"resnet18"``), built with ``torchvision.models.get_model``.

    Args:
        model_name: the model's name in torchvision.
        **kwargs: passed to the model's builder (``weights=...``, ``num_classes=...``).
    """
    try:
        from torchvision import models  # deferred: optional dependency (torchvision)
    except ImportError as e:
        raise ModuleNotFoundError("get_torchvision_model needs torchvision; install it next to torch.") from e
    return models.get_model(model_name, **kwargs)


__all__ = ["get_torchvision_model", "is_overridden"]
