"""Nested training state <-> (JSON tree, named tensors). No pickle.

``flatten(state)`` turns a checkpoint dict into a JSON-serialisable *tree* in which
every tensor is replaced by a reference, plus a ``{name: tensor}`` dict that shares
memory with the state. ``unflatten(tree, tensors)`` is the exact inverse and treats
the tree as untrusted input (the decoder is in ``decode.py``; ``validate(tree, specs)`` runs
its checks without tensor data, so that verifying a file agrees with loading it). The encoding
(every ``"$"`` tag) is specified in docs/FORMAT.md, section "State tree".

Tensor names are the dotted path of the tensor in the state: the model weights
``state["state_dict"]["l1.weight"]`` are stored as ``state_dict.l1.weight`` (the
prefix ``state_dict.`` followed by the key as is); optimizer state as e.g.
``optimizer_states.0.state.0.exp_avg``. A name already taken gets ``#2``, ``#3``...
appended, so names are unique and deterministic.

How values come back: types are kept exactly (dict, OrderedDict with its
``_metadata``, list, tuple, Namespace, int of any size, float incl. nan/inf/-0.0,
complex, str, bytes, set, frozenset, pathlib paths, enum members, torch.dtype/Size/device).
An enum member comes back as the member when its class is already imported where it is loaded
(never imported by loading), else as its value, with a warning. Tensors come back as plain CPU
tensors (``requires_grad`` dropped, ``nn.Parameter`` becomes ``Tensor``,
non-contiguous ones contiguous); a tensor object (or a same-shaped view of the same
memory, e.g. tied weights) that appears several times comes back as one object.
numpy arrays come back as numpy arrays with the same dtype (byte order included);
numpy scalars come back as the equivalent Python scalar (``np.float32(1.5)`` ->
``1.5``, ``np.int64(3)`` -> ``3``, ``np.bool_`` -> ``bool``).
"""

from __future__ import annotations

import argparse
import base64
import enum
import math
import warnings
from collections import Counter, OrderedDict
from typing import Any, Mapping

import torch

try:  # numpy is optional: without it, numpy values cannot occur when saving and are refused when loading
    import numpy as np
except ImportError:  # pragma: no cover - numpy is installed in the test environment
    np = None  # type: ignore[assignment]

from ember.checkpoint.format.decode import MAX_DEPTH, NUMPY_DTYPE, PATH_KINDS, TAG, TensorRef, decode, validate
from ember.checkpoint.format.dtypes import STORABLE_DTYPES, carrier_for
from ember.errors import CheckpointError

__all__ = ["flatten", "unflatten", "validate", "weights_tree", "TensorRef", "MAX_DEPTH"]

_SAFE_INT = 2**53  # ints with |v| < 2**53 are plain JSON numbers, larger ones are tagged hex strings
_RESERVED_NAMES = frozenset({"__metadata__"})  # safetensors reserves this key


# ----------------------------------------------------------------------------- encoding


def flatten(state: Mapping) -> tuple[dict, dict[str, torch.Tensor]]:
    """Split ``state`` into a JSON-serialisable tree and ``{name: tensor}`` (no data copied).

    Raises CheckpointError naming the path of the first value that cannot be stored.
    """
    if type(state) not in (dict, OrderedDict):
        raise CheckpointError(
            f"a checkpoint state must be a dict, got {_describe(state)}; "
            "wrap it, e.g. {'state_dict': model.state_dict()}"
        )
    enc = _Encoder()
    tree = enc.value(state, (), 0)
    return tree, enc.tensors


def _describe(v: Any) -> str:
    try:
        r = type(v).__name__ if isinstance(v, torch.Tensor) or type(v).__name__ == "ndarray" else repr(v)
    except Exception:  # a broken __repr__ must not hide the real error
        r = f"<{type(v).__name__} object>"
    if len(r) > 80:
        r = r[:77] + "..."
    t = type(v)
    tname = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return f"{r} ({tname})"


def _path_str(path: tuple) -> str:
    return ".".join(path) if path else "<state>"


def _segment(key: Any) -> str:
    if type(key) is str:
        return key
    if type(key) is int:
        return str(key)
    return repr(key)


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._taken: set[str] = set(_RESERVED_NAMES)
        self._seen: dict[Any, dict] = {}  # identity key -> tensor node
        self._alive: list[Any] = []  # keeps objects alive so their ids stay unique

    def _unstorable(self, v: Any, path: tuple, why: str = "") -> CheckpointError:
        return CheckpointError(
            f"{_path_str(path)}: {_describe(v)} cannot be stored in a checkpoint; "
            + (why or "store plain data (numbers, strings, lists, dicts, tensors) instead")
        )

    def value(self, v: Any, path: tuple, depth: int) -> Any:
        t = type(v)
        if v is None or t is bool or t is str:
            return v
        if t is int:
            return v if -_SAFE_INT < v < _SAFE_INT else {TAG: "int", "v": hex(v)}
        if t is float:
            return _float(v)
        if depth >= MAX_DEPTH and t in (list, tuple, dict, OrderedDict, Counter, argparse.Namespace, set, frozenset):
            raise CheckpointError(
                f"{_path_str(path)}: containers nested more than {MAX_DEPTH} deep cannot be "
                "stored in a checkpoint; flatten the structure"
            )
        if t is list:
            return [self.value(x, path + (str(i),), depth + 1) for i, x in enumerate(v)]
        if t is tuple:
            return {TAG: "tuple", "items": [self.value(x, path + (str(i),), depth + 1) for i, x in enumerate(v)]}
        if t is dict or t is OrderedDict:
            node = {TAG: "dict" if t is dict else "odict", "items": self._items(v.items(), path, depth)}
            meta = getattr(v, "_metadata", None) if t is OrderedDict else None
            if meta is not None:
                node["meta"] = self.value(meta, path + ("_metadata",), depth + 1)
            return node
        if t is Counter:  # MultiStepLR keeps its milestones in one: it must come back a Counter
            return {TAG: "counter", "items": self._items(v.items(), path, depth)}
        if t is argparse.Namespace:
            return {TAG: "namespace", "items": self._items(vars(v).items(), path, depth)}
        if t is torch.Tensor or isinstance(v, torch.Tensor):
            return self.tensor(v, path)
        if np is not None and t is np.ndarray:
            return self.ndarray(v, path)
        if np is not None and isinstance(v, np.generic):
            item = v.item()
            if type(item) in (bool, int, float, complex, str, bytes):
                return self.value(item, path, depth)
            raise self._unstorable(v, path, "convert it to a number or string first")
        if t is complex:
            return {TAG: "complex", "re": _float(v.real), "im": _float(v.imag)}
        if t is bytes:
            return {TAG: "bytes", "b64": base64.b64encode(v).decode("ascii")}
        if t is torch.dtype:
            return {TAG: "dtype", "v": str(v).removeprefix("torch.")}
        if t is torch.Size:
            return {TAG: "size", "v": list(v)}
        if t is torch.device:
            return {TAG: "device", "v": str(v)}
        if t is set or t is frozenset:
            return {TAG: t.__name__,
                    "items": [self._member(x, path + (str(i),), depth) for i, x in enumerate(_ordered(v))]}
        if t in _PATH_TAGS:
            return {TAG: "path", "kind": _PATH_TAGS[t], "v": str(v)}
        if isinstance(v, enum.Enum):
            cls = type(v)
            return {TAG: "enum", "cls": f"{cls.__module__}:{cls.__qualname__}", "name": v.name,
                    "v": self.value(v.value, path, depth + 1)}
        if t is bytearray:
            raise self._unstorable(v, path, "convert it to bytes first")
        raise self._unstorable(v, path)

    def _member(self, x: Any, path: tuple, depth: int) -> Any:
        """A set member: it comes back as a key would, so it must be one."""
        self._check_key(x, path, "set member")
        return self.value(x, path, depth + 1)

    def _items(self, items: Any, path: tuple, depth: int) -> list:
        out = []
        for k, x in items:
            kpath = path + (_segment(k),)
            self._check_key(k, kpath)
            out.append([self.value(k, kpath, depth + 1), self.value(x, kpath, depth + 1)])
        return out

    def _check_key(self, k: Any, path: tuple, what: str = "dict key") -> None:
        t = type(k)
        if t is tuple or t is frozenset:
            for x in k:
                self._check_key(x, path, what)
        elif isinstance(k, enum.Enum):
            self._check_key(k.value, path, what)
        elif k is not None and t not in (str, int, bool, float, complex, bytes, torch.dtype, torch.device) \
                and t not in _PATH_TAGS:
            raise CheckpointError(
                f"{_path_str(path)}: {what} {_describe(k)} cannot be stored in a checkpoint; use str, int, "
                "float, bool, None, bytes, paths, enum members or tuples/frozensets of those"
            )

    def _new_name(self, path: tuple) -> str:
        base = ".".join(path)
        name, n = base, 1
        while name in self._taken:
            n += 1
            name = f"{base}#{n}"
        self._taken.add(name)
        return name

    def tensor(self, t: torch.Tensor, path: tuple) -> dict:
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            raise self._unstorable(t, path, "tensor subclasses are not stored; convert it to a plain tensor first")
        if t.layout != torch.strided or t.is_nested:
            raise self._unstorable(t, path, f"{t.layout} tensors are not stored; convert it with .to_dense() first")
        if t.is_quantized:
            raise self._unstorable(t, path, "quantized tensors are not stored; "
                                   "store .dequantize() or its int_repr() and scales")
        if t.is_meta:
            raise self._unstorable(t, path, "a meta tensor has no data; materialise it first")
        key = (
            (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t.device)
            if t.numel()
            else ("id", id(t))
        )
        node = self._seen.get(key)
        if node is not None:
            return node
        self._alive.append(t)
        stored = t.detach().resolve_conj().resolve_neg()
        node = {TAG: "tensor", "name": self._new_name(path)}
        if stored.dtype not in STORABLE_DTYPES:
            carrier = carrier_for(stored.dtype)
            try:
                flat = stored.contiguous().reshape(-1).view(carrier)
            except (RuntimeError, TypeError):
                raise self._unstorable(t, path, f"tensors of dtype {stored.dtype} are not supported") from None
            node["dtype"] = str(stored.dtype).removeprefix("torch.")
            node["shape"] = list(stored.shape)
            stored = flat
        self.tensors[node["name"]] = stored
        self._seen[key] = node
        return node

    def ndarray(self, a: np.ndarray, path: tuple) -> dict:
        key = ("np", id(a))
        if key in self._seen:
            return self._seen[key]
        self._alive.append(a)
        if a.dtype.kind not in "biufc" or not NUMPY_DTYPE.fullmatch(a.dtype.str):
            raise self._unstorable(a, path, f"numpy arrays of dtype {a.dtype} are not stored; store numeric arrays")
        arr = a if a.flags.c_contiguous else a.copy(order="C")
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # read-only arrays: we never write through the tensor
                t = torch.from_numpy(arr)
        except TypeError:
            raise self._unstorable(a, path, f"numpy arrays of dtype {a.dtype} are not supported") from None
        self._alive.append(arr)
        node = {TAG: "ndarray", "dtype": a.dtype.str, "tensor": self.tensor(t, path)}
        self._seen[key] = node
        return node


_PATH_TAGS = {cls: kind for kind, cls in PATH_KINDS.items()}


def _ordered(members: set | frozenset) -> list:
    """A set's members in a deterministic order where they compare (sorted), else as iterated."""
    try:
        return sorted(members)
    except TypeError:
        return list(members)


def weights_tree(names: list[str]) -> dict:
    """The tree of ``{"state_dict": OrderedDict(name -> tensor)}`` (used for plain safetensors files)."""
    weights = {TAG: "odict", "items": [[n, {TAG: "tensor", "name": n}] for n in names]}
    return {TAG: "dict", "items": [["state_dict", weights]]}


def _float(v: float) -> Any:
    if math.isfinite(v):
        return v
    return {TAG: "float", "v": "nan" if v != v else ("inf" if v > 0 else "-inf")}


def unflatten(tree: Any, tensors: Mapping[str, torch.Tensor] | None) -> dict:
    """Inverse of ``flatten``. The tree is untrusted: anything malformed raises CheckpointCorruptError.

    With ``tensors=None`` the tree is decoded without tensors: each one becomes a ``TensorRef``.
    ``validate(tree, {name: (dtype, shape)})`` runs the same checks without tensor data.
    """
    return decode(tree, tensors)
