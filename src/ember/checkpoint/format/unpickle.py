"""Reading PyTorch Lightning's ``torch.save`` pickles without running code or importing Lightning.

``load_weights_only`` is ``torch.load(weights_only=True)`` with a few more globals allowed, each a
plain stand-in that builds data and nothing else: ``argparse.Namespace`` (hyperparameters that hold
one), Lightning's ``AttributeDict`` under every module path Lightning has pickled it from (it
becomes this module's ``AttributeDict``), and numeric numpy arrays and scalars (``numpy_pickles``).
Everything else the weights-only unpickler refuses is still refused.
"""

from __future__ import annotations

import argparse
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator

import torch

from ember.checkpoint.format.numpy_pickles import STAND_INS as _NUMPY_STAND_INS
from ember.checkpoint.format.numpy_pickles import ArrayBox

__all__ = ["AttributeDict", "load_weights_only"]


class AttributeDict(dict):
    """What a Lightning ``AttributeDict`` in a checkpoint becomes: a dict whose keys are also
    attributes (``hp.lr`` and ``hp["lr"]``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(f"AttributeDict has no entry {name!r}; it has {sorted(self)}") from e

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


# Where Lightning's AttributeDict has lived (module, name): pickles name the class of the object.
_ATTRIBUTE_DICT_PATHS = (
    ("lightning_fabric.utilities.data", "AttributeDict"),      # pytorch-lightning 2.x (self.hparams)
    ("lightning.fabric.utilities.data", "AttributeDict"),      # the `lightning` package 2.x
    ("pytorch_lightning.utilities.parsing", "AttributeDict"),  # 1.x, and 2.x's subclass
    ("lightning.pytorch.utilities.parsing", "AttributeDict"),
)

_lock = threading.Lock()       # one load at a time holds the extra globals
_built: list[dict] = []        # the dicts the stand-ins made during the current load


def _stand_in(module: str, name: str) -> type:
    """A class that torch's allowlist finds under ``module.name``. The unpickler calls only its
    ``__new__`` (NEWOBJ), which returns a plain dict: the unpickler fills only exact dicts
    (SETITEMS), and the dicts are swapped for ``AttributeDict`` once the load is done."""

    def __new__(cls, *args: Any) -> dict:  # noqa: ARG001 - Lightning pickles it with no arguments
        d: dict = {}
        _built.append(d)
        return d

    return type(name, (), {"__new__": __new__, "__module__": module, "__qualname__": name})


_STAND_INS = [_stand_in(m, n) for m, n in _ATTRIBUTE_DICT_PATHS]


def _allowed_globals() -> list:
    return [argparse.Namespace, *_STAND_INS, *_NUMPY_STAND_INS]


def load_weights_only(f: BinaryIO, map_location: Any = None) -> Any:
    """``torch.load(f, weights_only=True)`` that also reads the Lightning classes named in this
    module's docstring, as plain data. Raises what ``torch.load`` raises for anything else."""
    with _lock:
        have = set(torch.serialization.get_safe_globals())
        extra = [g for g in _allowed_globals() if g not in have]
        _built.clear()
        try:
            with _allowing(extra):
                obj = torch.load(f, map_location=map_location, weights_only=True)
            built = {id(d) for d in _built}
            return _swap(obj, built, {})
        finally:
            _built.clear()


@contextmanager
def _allowing(extra: list) -> Iterator[None]:
    """``extra`` added to torch's weights-only allowlist, and taken out again (only those)."""
    scoped = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    if scoped is not None:
        with scoped(extra):
            yield
        return
    before = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals(extra)
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


def _swap(v: Any, built: set[int], seen: dict[int, Any]) -> Any:
    """``v`` with every dict whose id is in ``built`` replaced by an ``AttributeDict`` and every numpy
    array box by its array (in place in mutable containers; shared and cyclic references kept)."""
    t = type(v)
    if t is ArrayBox:
        return v.array
    if t not in (dict, OrderedDict, list, tuple, argparse.Namespace):
        return v
    if id(v) in seen:
        return seen[id(v)]
    if t is dict and id(v) in built:
        new = AttributeDict()
        seen[id(v)] = new
        for k, x in v.items():
            new[k] = _swap(x, built, seen)
        return new
    if t is tuple:
        out = tuple(_swap(x, built, seen) for x in v)
        seen[id(v)] = out
        return out
    seen[id(v)] = v
    if t is list:
        v[:] = [_swap(x, built, seen) for x in v]
    elif t is argparse.Namespace:
        for k, x in list(vars(v).items()):
            setattr(v, k, _swap(x, built, seen))
    else:
        for k, x in list(v.items()):
            v[k] = _swap(x, built, seen)
    return v
