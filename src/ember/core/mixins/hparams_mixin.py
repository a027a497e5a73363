"""``lightning.pytorch.core.mixins.hparams_mixin``: ``save_hyperparameters`` for any class."""

from __future__ import annotations

import inspect
import types
from argparse import Namespace
from typing import Any, Mapping

from ember.errors import MisconfigurationError
from ember.core.init_args import AttributeDict, store_hparams
from ember.core.hooks import HparamsSurface


def _init_frames_of(obj: object, frame: types.FrameType | None) -> list[dict[str, Any]]:
    """The arguments of each ``__init__`` of ``obj`` running in ``frame`` and the frames that called it,
    outermost (the most derived class) first."""
    found = []
    while frame is not None and frame.f_code.co_name == "__init__" and frame.f_code.co_argcount:
        if frame.f_locals.get(frame.f_code.co_varnames[0]) is not obj:
            break
        found.append(get_init_args(frame))
        frame = frame.f_back
    return list(reversed(found))


class HyperparametersMixin(HparamsSurface):
    """Gives a class ``save_hyperparameters()`` and ``hparams`` as LightningModule has them, for classes that
    are not modules (a model's building block, a data class).
    """

    @property
    def hparams(self) -> AttributeDict | Namespace:
        """The saved hyperparameters (empty until :meth:`save_hyperparameters`)."""
        return self.__dict__.setdefault("_hparams", AttributeDict())

    def save_hyperparameters(self, *args: Any, ignore: str | list[str] | None = None,
                             frame: types.FrameType | None = None, logger: bool = True) -> None:
        """Save the arguments of the running ``__init__`` (every level of it) as ``self.hparams``.

        Args:
            *args: names of the arguments to keep, or one dict / Namespace to save instead.
            ignore: argument names to leave out.
            frame: the ``__init__`` frame to read (the caller's by default).
            logger: accepted for Lightning's signature (ember's Trainer logs a module's hyperparameters).
        """
        if len(args) == 1 and isinstance(args[0], (Mapping, Namespace)):
            values, args = dict(vars(args[0]) if isinstance(args[0], Namespace) else args[0]), ()
        else:
            caller = frame if frame is not None else inspect.currentframe().f_back  # type: ignore[union-attr]
            values = {}
            for level in _init_frames_of(self, caller):
                values.update(level)
            if not values and not args and caller is not None and caller.f_code.co_name != "__init__":
                raise MisconfigurationError("save_hyperparameters() must be called inside __init__, or be given "
                                            "a dict of values.")
        store_hparams(self, values, args, ignore)


__all__ = ["HyperparametersMixin"]


def get_init_args(frame: types.FrameType) -> dict[str, Any]:
    """The named arguments of the ``__init__`` call running in ``frame``, with ``**kwargs`` merged in.

    Args:
        frame: a frame of an ``__init__`` (``inspect.currentframe()`` inside it).
    """
    code = frame.f_code
    names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    local = frame.f_locals
    out = {n: local[n] for n in names[1:] if n in local}
    if code.co_flags & inspect.CO_VARKEYWORDS:
        extra = code.co_varnames[code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & inspect.CO_VARARGS)]
        out.update(local.get(extra, {}))
    return out
