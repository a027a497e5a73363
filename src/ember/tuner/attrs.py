"""Reading and setting a hyperparameter the way Lightning's tuner does: an attribute of the model, a key
of its ``hparams``, or the same on its datamodule."""

from __future__ import annotations

from typing import Any


def _holders(model) -> list:
    trainer = getattr(model, "trainer", None)
    out = [model, getattr(model, "hparams", None)]
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    if dm is not None:
        out += [dm, getattr(dm, "hparams", None)]
    return [h for h in out if h is not None]


def _has(holder, name: str) -> bool:
    if isinstance(holder, dict):
        return name in holder
    return name in getattr(holder, "__dict__", {}) or hasattr(type(holder), name)


def lightning_hasattr(model, name: str) -> bool:
    return any(_has(h, name) for h in _holders(model))


def lightning_getattr(model, name: str) -> Any:
    for h in _holders(model):
        if _has(h, name):
            return h[name] if isinstance(h, dict) else getattr(h, name)
    raise AttributeError(f"{name!r} is neither an attribute nor an hparam of the model or its datamodule.")


def lightning_setattr(model, name: str, value: Any) -> None:
    """Set ``name`` everywhere it is found (attribute and hparams alike)."""
    found = False
    for h in _holders(model):
        if _has(h, name):
            if isinstance(h, dict):
                h[name] = value
            else:
                setattr(h, name, value)
            found = True
    if not found:
        raise AttributeError(f"{name!r} is neither an attribute nor an hparam of the model or its datamodule.")
