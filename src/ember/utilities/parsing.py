"""``lightning.pytorch.utilities.parsing``: hyperparameters, ``__init__`` arguments, attribute look-ups."""

from __future__ import annotations

import inspect
import pickle
import types
from argparse import Namespace
from typing import Any

from ember.core.mixins.hparams_mixin import get_init_args
from ember.core.module import AttributeDict


def is_picklable(obj: object) -> bool:
    """Whether ``pickle.dumps(obj)`` succeeds.

    Args:
        obj: any object.
    """
    try:
        pickle.dumps(obj)
    except (pickle.PickleError, AttributeError, RuntimeError, TypeError):
        return False
    return True


def clean_namespace(hparams: dict | Namespace) -> None:
    """Remove, in place, the entries whose values cannot be pickled.

    Args:
        hparams: a dict or an ``argparse.Namespace``.
    """
    values = vars(hparams) if isinstance(hparams, Namespace) else hparams
    for key in [k for k, v in values.items() if not is_picklable(v)]:
        del values[key]


def parse_class_init_keys(cls: type) -> tuple[str, str | None, str | None]:
    """The names of ``cls.__init__``'s ``self``, ``*args`` and ``**kwargs`` parameters (None when absent).

    Args:
        cls: the class.
    """
    params = list(inspect.signature(cls.__init__).parameters.values())
    star = next((p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    double = next((p.name for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    return params[0].name, star, double


def collect_init_args(frame: types.FrameType, path_args: list[dict[str, Any]], inside: bool = False,
                      classes: tuple[type, ...] = ()) -> list[dict[str, Any]]:
    """The arguments of every ``__init__`` in the chain of frames above ``frame`` (base classes first).

    Args:
        frame: the frame to start from.
        path_args: a list to append to (returned).
        inside: whether ``frame`` is already inside an ``__init__``.
        classes: when given, only ``__init__`` frames whose ``self`` is an instance of one of them count.
    """
    chain = []
    while frame is not None:
        if frame.f_code.co_name == "__init__":
            obj = frame.f_locals.get(frame.f_code.co_varnames[0]) if frame.f_code.co_argcount else None
            if not classes or isinstance(obj, classes):
                chain.append(get_init_args(frame))
        elif inside:
            break
        frame = frame.f_back
    path_args.extend(reversed(chain))
    return path_args


def save_hyperparameters(obj: Any, *args: Any, ignore: str | list[str] | None = None,
                         frame: types.FrameType | None = None, given_hparams: dict | None = None) -> None:
    """``obj.save_hyperparameters(...)`` for a LightningModule or LightningDataModule.

    Args:
        obj: the module or datamodule.
        *args: names of ``__init__`` arguments to save, or one dict / Namespace of values.
        ignore: argument names to leave out.
        frame: unused: ember records ``__init__`` arguments when they are passed, not from frames.
        given_hparams: values to save instead of the ``__init__`` arguments.
    """
    method = getattr(obj, "save_hyperparameters", None)
    if not callable(method):
        raise TypeError(f"save_hyperparameters needs a LightningModule or LightningDataModule; received "
                        f"{type(obj).__name__}.")
    method(*((given_hparams,) if given_hparams is not None else args), ignore=ignore)


def _owner(model: Any, attribute: str) -> Any:
    """Where ``attribute`` lives: the model, its ``hparams``, or the Trainer's datamodule (None if nowhere)."""
    if hasattr(model, attribute):
        return model
    hparams = getattr(model, "hparams", None)
    if isinstance(hparams, dict) and attribute in hparams:
        return hparams
    trainer = getattr(model, "_trainer", None) or model.__dict__.get("trainer")
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is not None and hasattr(datamodule, attribute):
        return datamodule
    return None


def lightning_hasattr(model: Any, attribute: str) -> bool:
    """Whether ``attribute`` is on the model, in its ``hparams``, or on the Trainer's datamodule.

    Args:
        model: the LightningModule.
        attribute: the name, e.g. ``"lr"`` or ``"batch_size"``.
    """
    return _owner(model, attribute) is not None


def lightning_getattr(model: Any, attribute: str) -> Any:
    """The value :func:`lightning_hasattr` finds.

    Args:
        model: the LightningModule.
        attribute: the name.
    """
    owner = _owner(model, attribute)
    if owner is None:
        raise AttributeError(f"{attribute} is neither an attribute of the model, a key of its hparams, nor an "
                             "attribute of the Trainer's datamodule.")
    return owner[attribute] if isinstance(owner, dict) else getattr(owner, attribute)


def lightning_setattr(model: Any, attribute: str, value: Any) -> None:
    """Set ``attribute`` wherever :func:`lightning_hasattr` finds it.

    Args:
        model: the LightningModule.
        attribute: the name.
        value: the new value.
    """
    owner = _owner(model, attribute)
    if owner is None:
        raise AttributeError(f"{attribute} is neither an attribute of the model, a key of its hparams, nor an "
                             "attribute of the Trainer's datamodule; set it on one of them first.")
    if isinstance(owner, dict):
        owner[attribute] = value
    else:
        setattr(owner, attribute, value)


__all__ = ["AttributeDict", "clean_namespace", "collect_init_args", "get_init_args", "is_picklable",
           "lightning_getattr", "lightning_hasattr", "lightning_setattr", "parse_class_init_keys",
           "save_hyperparameters"]
