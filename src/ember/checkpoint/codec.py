"""Nested training state <-> (JSON tree, named tensors). No pickle.

``flatten(state)`` turns a checkpoint dict into a JSON-serialisable *tree* in which
every tensor is replaced by a reference, plus a ``{name: tensor}`` dict that shares
memory with the state. ``unflatten(tree, tensors)`` is the exact inverse and treats
the tree as untrusted input. The encoding (every ``"$"`` tag) is specified in
docs/FORMAT.md, section "State tree".

Tensor names are the dotted path of the tensor in the state: the model weights
``state["state_dict"]["l1.weight"]`` are stored as ``state_dict.l1.weight`` (the
prefix ``state_dict.`` followed by the key as is); optimizer state as e.g.
``optimizer_states.0.state.0.exp_avg``. A name already taken gets ``#2``, ``#3``...
appended, so names are unique and deterministic.

How values come back: types are kept exactly (dict, OrderedDict with its
``_metadata``, list, tuple, Namespace, int of any size, float incl. nan/inf/-0.0,
complex, str, bytes, torch.dtype/Size/device). Tensors come back as plain CPU
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
import math
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import torch

try:  # numpy is optional: without it, numpy values cannot occur when saving and are refused when loading
    import numpy as np
except ImportError:  # pragma: no cover - numpy is installed in the test environment
    np = None  # type: ignore[assignment]

from ember.checkpoint.fileformat import STORABLE_DTYPES
from ember.errors import CheckpointCorruptError, CheckpointError

__all__ = ["flatten", "unflatten", "weights_tree", "TensorRef", "MAX_DEPTH"]

TAG = "$"
MAX_DEPTH = 100  # containers nested deeper than this are refused (writing) / corrupt (reading)
_SAFE_INT = 2**53  # ints with |v| < 2**53 are plain JSON numbers, larger ones are tagged hex strings
_RESERVED_NAMES = frozenset({"__metadata__"})  # safetensors reserves this key

# Every torch dtype by its short name ("float32"); the only way a dtype name from a file is resolved.
_TORCH_DTYPES: dict[str, torch.dtype] = {
    str(v).removeprefix("torch."): v for v in vars(torch).values() if isinstance(v, torch.dtype)
}
# Integer "carrier" dtypes used to store tensors whose dtype safetensors has no code for
# (complex128, complex32, float4...): the bytes are stored flat as this dtype.
_CARRIERS = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}
_NUMPY_DTYPE = re.compile(r"[<>|=][biufc][0-9]{1,2}")
_DEVICE = re.compile(r"[a-z][a-z0-9_]{0,31}(:[0-9]{1,6})?")


@dataclass(frozen=True)
class TensorRef:
    """Stands for a tensor when a tree is decoded without its tensors (``unflatten(tree, None)``)."""

    name: str
    kind: str = "tensor"  # "tensor" or "ndarray"

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"


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
        if depth >= MAX_DEPTH and t in (list, tuple, dict, OrderedDict, argparse.Namespace):
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
        if t is bytearray:
            raise self._unstorable(v, path, "convert it to bytes first")
        raise self._unstorable(v, path)

    def _items(self, items: Any, path: tuple, depth: int) -> list:
        out = []
        for k, x in items:
            kpath = path + (_segment(k),)
            self._check_key(k, kpath)
            out.append([self.value(k, kpath, depth + 1), self.value(x, kpath, depth + 1)])
        return out

    def _check_key(self, k: Any, path: tuple) -> None:
        t = type(k)
        if t is tuple:
            for x in k:
                self._check_key(x, path)
        elif k is not None and t not in (str, int, bool, float, complex, bytes, torch.dtype, torch.device):
            raise CheckpointError(
                f"{_path_str(path)}: dict key {_describe(k)} cannot be stored in a checkpoint; "
                "use str, int, float, bool, None, bytes or tuples of those as keys"
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
            raise self._unstorable(t, path, "quantized tensors are not stored; store .dequantize() or its int_repr() and scales")
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
            carrier = _CARRIERS[math.gcd(stored.element_size(), 8)]
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
        if a.dtype.kind not in "biufc" or not _NUMPY_DTYPE.fullmatch(a.dtype.str):
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


def weights_tree(names: list[str]) -> dict:
    """The tree of ``{"state_dict": OrderedDict(name -> tensor)}`` (used for plain safetensors files)."""
    weights = {TAG: "odict", "items": [[n, {TAG: "tensor", "name": n}] for n in names]}
    return {TAG: "dict", "items": [["state_dict", weights]]}


def _float(v: float) -> Any:
    if math.isfinite(v):
        return v
    return {TAG: "float", "v": "nan" if v != v else ("inf" if v > 0 else "-inf")}


# ----------------------------------------------------------------------------- decoding

_FIELDS = {
    "int": {"v"},
    "float": {"v"},
    "complex": {"re", "im"},
    "bytes": {"b64"},
    "tuple": {"items"},
    "dict": {"items"},
    "odict": {"items"},  # + optional "meta"
    "namespace": {"items"},
    "dtype": {"v"},
    "size": {"v"},
    "device": {"v"},
    "tensor": {"name"},  # + optional "dtype" and "shape" (stored through a carrier dtype)
    "ndarray": {"dtype", "tensor"},
}
_OPTIONAL = {"odict": {"meta"}, "tensor": {"dtype", "shape"}}
_KEY_TAGS = {"int", "float", "complex", "bytes", "tuple", "dtype", "device"}


def unflatten(tree: Any, tensors: Mapping[str, torch.Tensor] | None) -> dict:
    """Inverse of ``flatten``. The tree is untrusted: anything malformed raises CheckpointCorruptError.

    With ``tensors=None`` the tree is decoded without tensors: each one becomes a ``TensorRef``.
    """
    dec = _Decoder(tensors)
    try:
        state = dec.value(tree, 0, False)
    except RecursionError:
        raise CheckpointCorruptError("the state tree is nested too deeply") from None
    if type(state) not in (dict, OrderedDict):
        raise CheckpointCorruptError(f"the state tree must describe a dict, it describes a {type(state).__name__}")
    return state


def _bad(msg: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"malformed state tree: {msg}")


class _Decoder:
    def __init__(self, tensors: Mapping[str, torch.Tensor] | None) -> None:
        self.tensors = tensors
        self._cache: dict[tuple, Any] = {}

    def value(self, node: Any, depth: int, in_key: bool) -> Any:
        t = type(node)
        if node is None or t is bool or t is str or t is int:
            return node
        if t is float:
            if not math.isfinite(node):
                raise _bad("bare NaN/Infinity is not JSON; non-finite floats are tagged")
            return node
        if depth >= MAX_DEPTH + 2:
            raise _bad(f"nested more than {MAX_DEPTH} deep")
        if t is list:
            if in_key:
                raise _bad("a list cannot be a dict key")
            return [self.value(x, depth + 1, False) for x in node]
        if t is not dict:
            raise _bad(f"unexpected {t.__name__} (not a JSON value)")
        tag = node.get(TAG)
        if type(tag) is not str or tag not in _FIELDS:
            raise _bad(f"unknown node type {tag!r}" if TAG in node else "an object without a '$' type tag")
        keys = set(node) - {TAG}
        if not _FIELDS[tag] <= keys or keys - _FIELDS[tag] - _OPTIONAL.get(tag, set()):
            raise _bad(f"a {tag!r} node must have the fields {sorted(_FIELDS[tag])}, it has {sorted(keys)}")
        if in_key and tag not in _KEY_TAGS:
            raise _bad(f"a {tag!r} cannot be a dict key")
        return getattr(self, "_" + tag)(node, depth, in_key)

    # scalars ------------------------------------------------------------------
    def _int(self, node: dict, depth: int, in_key: bool) -> int:
        v = node["v"]
        if type(v) is not str or not re.fullmatch(r"-?0x[0-9a-f]+", v):
            raise _bad(f"an 'int' node holds a hex string like '-0x1f', got {v!r:.40}")
        return int(v, 16)

    def _float(self, node: dict, depth: int, in_key: bool) -> float:
        v = node["v"]
        if v not in ("nan", "inf", "-inf"):
            raise _bad(f"a 'float' node holds 'nan', 'inf' or '-inf', got {v!r:.40}")
        return float(v)

    def _number(self, v: Any) -> float:
        if type(v) is float:
            return v
        if type(v) is dict and v.get(TAG) == "float":
            return self.value(v, 0, True)
        raise _bad(f"a 'complex' node holds floats, got {v!r:.40}")

    def _complex(self, node: dict, depth: int, in_key: bool) -> complex:
        return complex(self._number(node["re"]), self._number(node["im"]))

    def _bytes(self, node: dict, depth: int, in_key: bool) -> bytes:
        v = node["b64"]
        if type(v) is not str:
            raise _bad("a 'bytes' node holds a base64 string")
        try:
            return base64.b64decode(v.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise _bad("a 'bytes' node holds invalid base64") from None

    def _dtype(self, node: dict, depth: int, in_key: bool) -> torch.dtype:
        return self._dtype_name(node["v"])

    def _dtype_name(self, v: Any) -> torch.dtype:
        dt = _TORCH_DTYPES.get(v) if type(v) is str else None
        if dt is None:
            raise _bad(f"unknown dtype {v!r:.40}")
        return dt

    def _size(self, node: dict, depth: int, in_key: bool) -> torch.Size:
        return torch.Size(self._shape(node["v"]))

    def _shape(self, v: Any) -> list[int]:
        if type(v) is not list or len(v) > 64 or any(type(d) is not int or not 0 <= d < 2**63 for d in v):
            raise _bad(f"a shape is a list of at most 64 non-negative ints, got {v!r:.60}")
        return v

    def _device(self, node: dict, depth: int, in_key: bool) -> torch.device:
        v = node["v"]
        if type(v) is not str or not _DEVICE.fullmatch(v):
            raise _bad(f"invalid device {v!r:.40}")
        try:
            return torch.device(v)
        except (RuntimeError, ValueError):
            raise _bad(f"invalid device {v!r}") from None

    # containers ---------------------------------------------------------------
    def _list(self, v: Any, what: str) -> list:
        if type(v) is not list:
            raise _bad(f"the items of a {what!r} node must be a list")
        return v

    def _tuple(self, node: dict, depth: int, in_key: bool) -> tuple:
        return tuple(self.value(x, depth + 1, in_key) for x in self._list(node["items"], "tuple"))

    def _pairs(self, node: dict, depth: int, str_keys: bool = False) -> list[tuple]:
        out = []
        for pair in self._list(node["items"], node[TAG]):
            if type(pair) is not list or len(pair) != 2:
                raise _bad(f"the items of a {node[TAG]!r} node are [key, value] pairs")
            k = self.value(pair[0], depth + 1, True)
            if str_keys and type(k) is not str:
                raise _bad("namespace attribute names must be strings")
            out.append((k, self.value(pair[1], depth + 1, False)))
        return out

    def _mapping(self, cls: type, pairs: list[tuple]) -> dict:
        out = cls()
        for k, v in pairs:
            try:
                if k in out:
                    raise _bad(f"duplicate key {k!r:.40}")
                out[k] = v
            except TypeError:
                raise _bad(f"unhashable dict key {k!r:.40}") from None
        return out

    def _dict(self, node: dict, depth: int, in_key: bool) -> dict:
        return self._mapping(dict, self._pairs(node, depth))

    def _odict(self, node: dict, depth: int, in_key: bool) -> OrderedDict:
        out = self._mapping(OrderedDict, self._pairs(node, depth))
        if "meta" in node:
            out._metadata = self.value(node["meta"], depth + 1, False)
        return out

    def _namespace(self, node: dict, depth: int, in_key: bool) -> argparse.Namespace:
        return argparse.Namespace(**self._mapping(dict, self._pairs(node, depth, str_keys=True)))

    # tensors ------------------------------------------------------------------
    def _tensor(self, node: dict, depth: int, in_key: bool) -> Any:
        name = node["name"]
        if type(name) is not str:
            raise _bad("a tensor's name must be a string")
        carried = "dtype" in node or "shape" in node
        if carried and not ("dtype" in node and "shape" in node):
            raise _bad(f"tensor {name!r}: 'dtype' and 'shape' come together")
        if self.tensors is None:
            return TensorRef(name)
        key = (name, node.get("dtype"), tuple(node["shape"]) if type(node.get("shape")) is list else None)
        if key in self._cache:
            return self._cache[key]
        if name not in self.tensors:
            raise _bad(f"references tensor {name!r}, which is not in the file")
        t = self.tensors[name]
        if carried:
            dtype = self._dtype_name(node["dtype"])
            shape = self._shape(node["shape"])
            itemsize = dtype.itemsize
            if t.dim() != 1 or t.numel() * t.element_size() != math.prod(shape) * itemsize:
                raise _bad(f"tensor {name!r}: {t.numel() * t.element_size()} stored bytes do not hold a {dtype} tensor of shape {shape}")
            try:
                t = t.view(dtype).reshape(shape) if t.numel() else torch.empty(shape, dtype=dtype, device=t.device)
            except RuntimeError as e:
                raise _bad(f"tensor {name!r} cannot be viewed as {dtype}: {e}") from None
        self._cache[key] = t
        return t

    def _ndarray(self, node: dict, depth: int, in_key: bool) -> Any:
        want = node["dtype"]
        if type(want) is not str or not _NUMPY_DTYPE.fullmatch(want):
            raise _bad(f"invalid numpy dtype {want!r:.40}")
        inner = node["tensor"]
        if type(inner) is not dict or inner.get(TAG) != "tensor":
            raise _bad("an 'ndarray' node wraps a 'tensor' node")
        t = self.value(inner, depth + 1, False)
        if isinstance(t, TensorRef):
            return TensorRef(t.name, "ndarray")
        if np is None:
            raise CheckpointError("this checkpoint holds numpy arrays; install numpy to load it")
        key = ("np", id(t), want)
        if key in self._cache:
            return self._cache[key]
        try:
            arr = t.detach().cpu().numpy()
            dtype = np.dtype(want)
        except (TypeError, RuntimeError):
            raise _bad(f"tensor {inner['name']!r} of dtype {t.dtype} cannot be a numpy array of {want!r}") from None
        if dtype.newbyteorder("=") != arr.dtype:
            raise _bad(f"tensor {inner['name']!r} of dtype {t.dtype} cannot be a numpy array of {want!r}")
        if dtype != arr.dtype:
            arr = arr.astype(dtype)
        self._cache[key] = arr
        return arr
