"""Numeric numpy arrays and scalars in ``torch.save`` pickles (sweeps often put them in
``hyper_parameters``), read through stand-ins that build data and nothing else.

A pickled numpy array names ``numpy.core.multiarray._reconstruct`` (``numpy._core`` in numpy 2),
``numpy.ndarray`` and ``numpy.dtype``; a scalar names ``numpy.core.multiarray.scalar``. Under those
names torch's weights-only unpickler finds the stand-ins below, never numpy's own functions: a dtype
must be one of ``NUMERIC`` (bool, ints, unsigned ints, floats, complex, with a byte order), the bytes
must be exactly the array's size, and the result is a fresh array copied from those bytes. Object
arrays (whose elements are pickles themselves), structured and string dtypes are refused.
"""

from __future__ import annotations

import math
from typing import Any

NUMERIC = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"})
REFUSED = "only numeric numpy arrays and scalars are read from a checkpoint (no object, string or structured dtypes)"


class DTypeBox:
    """What ``numpy.dtype(code, align, copy)`` plus its BUILD state become: a checked numeric dtype."""

    def __init__(self, code: Any = None, align: Any = False, copy: Any = True) -> None:
        if type(code) is not str or code not in NUMERIC:
            raise ValueError(f"numpy dtype {code!r:.40} refused: {REFUSED}")
        self.code, self.order = code, "="

    def __setstate__(self, state: Any) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if order not in ("<", ">", "|", "="):
            raise ValueError(f"numpy dtype state {state!r:.60} refused: {REFUSED}")
        self.order = order

    def dtype(self) -> Any:
        import numpy as np  # deferred: optional dependency (numpy)

        dtype = np.dtype(self.code)
        return dtype.newbyteorder(self.order) if self.order in ("<", ">") else dtype


class NDArrayMarker:
    """``numpy.ndarray`` as the unpickler sees it: only an argument of ``_reconstruct``."""


class ArrayBox:
    """An array under construction (``_reconstruct`` then BUILD); ``array`` once built."""

    array: Any = None

    def __setstate__(self, state: Any) -> None:
        import numpy as np  # deferred: optional dependency (numpy)

        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], DTypeBox)):
            raise ValueError(f"numpy array state refused: {REFUSED}")
        _, shape, dtype_box, fortran, raw = state
        dtype = dtype_box.dtype()
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)) or type(raw) is not bytes \
                or len(raw) != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"numpy array of shape {shape!r:.60} with {type(raw).__name__} data refused: {REFUSED}")
        flat = np.frombuffer(raw, dtype=dtype).copy()
        self.array = flat.reshape(shape, order="F" if fortran else "C")


def _reconstruct(cls: Any, shape: Any, code: Any) -> ArrayBox:  # numpy's (ndarray, (0,), b'b')
    if not (isinstance(cls, type) and issubclass(cls, NDArrayMarker)):
        raise ValueError(f"numpy _reconstruct of {cls!r:.60} refused: {REFUSED}")
    return ArrayBox()


def _scalar(dtype_box: Any, raw: Any = None) -> Any:
    import numpy as np  # deferred: optional dependency (numpy)

    if not isinstance(dtype_box, DTypeBox) or type(raw) is not bytes or len(raw) != dtype_box.dtype().itemsize:
        raise ValueError(f"numpy scalar refused: {REFUSED}")
    return np.frombuffer(raw, dtype=dtype_box.dtype())[0]


def _named(obj: Any, module: str, name: str) -> Any:
    """A copy of the function or class ``obj`` that torch's allowlist finds under ``module.name``."""
    if isinstance(obj, type):
        return type(name, (obj,), {"__module__": module, "__qualname__": name})
    def call(*args: Any) -> Any:
        return obj(*args)
    call.__module__, call.__qualname__, call.__name__ = module, name, name
    return call


STAND_INS = [
    *(_named(_reconstruct, f"{m}.multiarray", "_reconstruct") for m in ("numpy.core", "numpy._core")),
    *(_named(_scalar, f"{m}.multiarray", "scalar") for m in ("numpy.core", "numpy._core")),
    _named(DTypeBox, "numpy", "dtype"),
    _named(NDArrayMarker, "numpy", "ndarray"),
    ArrayBox,  # BUILD fills only allowed classes: the box is one (under its own, real name)
]

