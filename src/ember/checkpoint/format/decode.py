"""Decoding a state tree (docs/FORMAT.md, section 5) back into Python values. The tree is untrusted.

Every node is checked against its tag's schema, nesting is limited, duplicate and unhashable keys are
refused, and anything malformed raises ``CheckpointCorruptError`` naming the problem — never a bare
TypeError or KeyError. ``validate`` runs exactly these checks against the file's tensor entries
(dtype and shape only) without any tensor data, so that verifying a file and loading it agree.
"""

from __future__ import annotations

import argparse
import base64
import math
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, Mapping

import torch

try:  # numpy is optional: without it, numpy values cannot occur when saving and are refused when loading
    import numpy as np
except ImportError:  # pragma: no cover - numpy is installed in the test environment
    np = None  # type: ignore[assignment]

from ember.checkpoint.format.dtypes import TORCH_DTYPES, carrier_for
from ember.checkpoint.format.typed import PATH_KINDS, TypedNodes
from ember.errors import CheckpointCorruptError, CheckpointError

__all__ = ["TAG", "MAX_DEPTH", "PATH_KINDS", "TensorRef", "decode", "validate"]

TAG = "$"
MAX_DEPTH = 100  # containers nested deeper than this are refused (writing) / corrupt (reading)
NUMPY_DTYPE = re.compile(r"[<>|=][biufc][0-9]{1,2}")
_DEVICE = re.compile(r"[a-z][a-z0-9_]{0,31}(:[0-9]{1,6})?")
_QUANTIZED = frozenset(
    getattr(torch, n) for n in ("qint8", "quint8", "qint32", "quint4x2", "quint2x4") if hasattr(torch, n)
)

Spec = tuple  # (torch.dtype, tuple[int, ...]): what the file's header says about one stored tensor


@dataclass(frozen=True)
class TensorRef:
    """Stands for a tensor when a tree is decoded without its tensors (``unflatten(tree, None)``)."""

    name: str
    kind: str = "tensor"  # "tensor" or "ndarray"

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"


def decode(tree: Any, tensors: Mapping[str, torch.Tensor] | None, specs: Mapping[str, Spec] | None = None,
           *, check_only: bool = False) -> dict:
    """The state the tree describes. With ``tensors``, references resolve to them; with only ``specs``
    ({name: (dtype, shape)}) every reference is checked against them and becomes a ``TensorRef``;
    with neither, references become ``TensorRef`` unchecked. ``check_only``: the result is not used
    (every reference becomes the same ``TensorRef``)."""
    try:
        state = _Decoder(tensors, specs, check_only).value(tree, 0, False)
    except RecursionError:
        raise CheckpointCorruptError("the state tree is nested too deeply") from None
    if type(state) not in (dict, OrderedDict):
        raise CheckpointCorruptError(f"the state tree must describe a dict, it describes a {type(state).__name__}")
    return state


def validate(tree: Any, specs: Mapping[str, Spec]) -> None:
    """Run every check that loading runs, against the stored tensors' dtypes and shapes only."""
    decode(tree, None, specs, check_only=True)


def _bad(msg: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"malformed state tree: {msg}")


_FIELDS = {
    "int": {"v"},
    "float": {"v"},
    "complex": {"re", "im"},
    "bytes": {"b64"},
    "tuple": {"items"},
    "dict": {"items"},
    "odict": {"items"},  # + optional "meta"
    "counter": {"items"},
    "namespace": {"items"},
    "dtype": {"v"},
    "size": {"v"},
    "device": {"v"},
    "tensor": {"name"},  # + optional "dtype" and "shape" (stored through a carrier dtype)
    "ndarray": {"dtype", "tensor"},
    "set": {"items"},
    "frozenset": {"items"},
    "path": {"kind", "v"},
    "enum": {"cls", "name", "v"},
}
_OPTIONAL = {"odict": {"meta"}, "tensor": {"dtype", "shape"}}
_EXACT = {tag: frozenset(fields | {TAG}) for tag, fields in _FIELDS.items()}  # the common case: no optional field
_PLAIN = frozenset({str, int, bool, type(None)})  # JSON values that decode to themselves (and finite floats)
_CHECKED = TensorRef("")
_FIRST, _SECOND = itemgetter(0), itemgetter(1)  # what a reference becomes when only the checks matter (validate)
_KEY_TAGS = {"int", "float", "complex", "bytes", "tuple", "dtype", "device", "frozenset", "path", "enum"}
_NUMPY_OF: dict[torch.dtype, Any] = {}  # torch dtype -> numpy dtype (None: numpy has none)


def _numpy_dtype(dtype: torch.dtype) -> Any:
    if dtype not in _NUMPY_OF:
        try:
            _NUMPY_OF[dtype] = torch.empty(0, dtype=dtype).numpy().dtype
        except (TypeError, RuntimeError):
            _NUMPY_OF[dtype] = None
    return _NUMPY_OF[dtype]


class _Decoder(TypedNodes):
    def __init__(self, tensors: Mapping[str, torch.Tensor] | None, specs: Mapping[str, Spec] | None,
                 check_only: bool = False) -> None:
        self.tensors = tensors
        self.specs = specs
        self.check_only = check_only and tensors is None and specs is not None
        self._cache: dict[tuple, Any] = {}

    def value(self, node: Any, depth: int, in_key: bool) -> Any:
        t = type(node)
        if t in _PLAIN:
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
            kinds = set(map(type, node))  # a list of plain values (a long one, often) needs no call per item
            if kinds <= _PLAIN or (kinds == {float} and all(map(math.isfinite, node))):
                return node if self.check_only else list(node)
            return [self.value(x, depth + 1, False) for x in node]
        if t is not dict:
            raise _bad(f"unexpected {t.__name__} (not a JSON value)")
        tag = node.get(TAG)
        if type(tag) is not str or tag not in _FIELDS:
            raise _bad(f"unknown node type {tag!r:.40}" if TAG in node else "an object without a '$' type tag")
        if node.keys() != _EXACT[tag]:
            keys = set(node) - {TAG}
            if not _FIELDS[tag] <= keys or keys - _FIELDS[tag] - _OPTIONAL.get(tag, set()):
                raise _bad(f"a {tag!r} node must have the fields {sorted(_FIELDS[tag])}, it has {sorted(keys)!r:.200}")
        if in_key and tag not in _KEY_TAGS:
            raise _bad(f"a {tag!r} cannot be a dict key")
        return _HANDLERS[tag](self, node, depth, in_key)

    # scalars ------------------------------------------------------------------
    def _int(self, node: dict, depth: int, in_key: bool) -> int:
        v = node["v"]
        if type(v) is not str or not re.fullmatch(r"-?0x[0-9a-f]+", v):
            raise _bad(f"an 'int' node holds a hex string like '-0x1f', got {v!r:.40}")
        return int(v, 16)

    def _float(self, node: dict, depth: int, in_key: bool) -> float:
        v = node["v"]
        if type(v) is not str or v not in ("nan", "inf", "-inf"):
            raise _bad(f"a 'float' node holds 'nan', 'inf' or '-inf', got {v!r:.40}")
        return float(v)

    def _number(self, v: Any) -> float:
        if type(v) is float:
            if not math.isfinite(v):
                raise _bad("bare NaN/Infinity is not JSON; non-finite floats are tagged")
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
        dt = TORCH_DTYPES.get(v) if type(v) is str else None
        if dt is None:
            raise _bad(f"unknown dtype {v!r:.40}")
        return dt

    def _size(self, node: dict, depth: int, in_key: bool) -> torch.Size:
        return torch.Size(self._shape(node["v"]))

    def _shape(self, v: Any) -> tuple[int, ...]:
        if type(v) is not list or len(v) > 64 or any(type(d) is not int or not 0 <= d < 2**63 for d in v):
            raise _bad(f"a shape is a list of at most 64 non-negative ints, got {v!r:.60}")
        return tuple(v)

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
        items = self._list(node["items"], node[TAG])
        keys = _checked_keys(items, self.specs) if self.check_only and depth <= MAX_DEPTH else None
        if keys is not None:  # validate: nothing in these items needs a call of its own
            return list(zip(keys, repeat(None)))
        out = []
        for pair in items:
            if type(pair) is not list or len(pair) != 2:
                raise _bad(f"the items of a {node[TAG]!r} node are [key, value] pairs")
            k, v = pair
            if type(k) is not str:  # a string key is itself (value() would return it): no call
                k = self.value(k, depth + 1, True)
                if str_keys and type(k) is not str:
                    raise _bad("namespace attribute names must be strings")
            out.append((k, v if type(v) in _PLAIN else self.value(v, depth + 1, False)))
        return out

    def _mapping(self, cls: type, pairs: list[tuple]) -> dict:
        try:  # all at once; one by one (below) when a key is unhashable or twice, to say which
            out = cls(pairs) if cls is not Counter else Counter(dict(pairs))
            if len(out) == len(pairs):
                return out
        except TypeError:
            pass
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

    def _counter(self, node: dict, depth: int, in_key: bool) -> Counter:
        return self._mapping(Counter, self._pairs(node, depth))

    def _namespace(self, node: dict, depth: int, in_key: bool) -> argparse.Namespace:
        return argparse.Namespace(**self._mapping(dict, self._pairs(node, depth, str_keys=True)))

    # tensors ------------------------------------------------------------------
    def _stored(self, name: str) -> Spec:
        if self.tensors is not None:
            t = self.tensors.get(name)
            if t is not None:
                return t.dtype, tuple(t.shape)
        elif name in self.specs:  # type: ignore[operator]
            return self.specs[name]  # type: ignore[index]
        raise _bad(f"references tensor {name!r:.200}, which is not in the file")

    def _carried(self, node: dict, name: str) -> tuple[torch.dtype, tuple[int, ...]] | None:
        """The real dtype and shape of a tensor stored through a carrier, checked; None if not carried."""
        if "dtype" not in node and "shape" not in node:
            return None
        if not ("dtype" in node and "shape" in node):
            raise _bad(f"tensor {name!r:.200}: 'dtype' and 'shape' come together")
        dtype, shape = self._dtype_name(node["dtype"]), self._shape(node["shape"])
        if dtype in _QUANTIZED:
            raise _bad(f"tensor {name!r:.200}: quantized dtype {dtype} is never stored")
        return dtype, shape

    def _check_carrier(self, name: str, stored: Spec, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
        sdtype, sshape = stored
        if sdtype != carrier_for(dtype):
            raise _bad(f"tensor {name!r:.200}: a {dtype} tensor is carried as {carrier_for(dtype)}, not {sdtype}")
        nbytes = math.prod(sshape) * sdtype.itemsize
        if len(sshape) != 1 or nbytes != math.prod(shape) * dtype.itemsize:
            raise _bad(f"tensor {name!r:.200}: {nbytes} stored bytes do not hold a {dtype} tensor "
                       f"of shape {list(shape)}")

    def _tensor(self, node: dict, depth: int, in_key: bool) -> Any:
        name = node["name"]
        if type(name) is not str:
            raise _bad("a tensor's name must be a string")
        if self.check_only and len(node) == 2:  # {"$", "name"}: no carrier; only the name's presence to check
            self._stored(name)
            return _CHECKED
        carried = self._carried(node, name)
        if self.tensors is None and self.specs is None:
            return TensorRef(name)
        key = (name, carried)
        if key in self._cache:
            return self._cache[key]
        stored = self._stored(name)
        if carried is not None:
            self._check_carrier(name, stored, *carried)
        if self.tensors is None:
            out: Any = TensorRef(name)
        else:
            out = self.tensors[name]
            if carried is not None:
                dtype, shape = carried
                try:
                    out = (out.view(dtype).reshape(shape) if out.numel()
                           else torch.empty(shape, dtype=dtype, device=out.device))
                except RuntimeError as e:
                    raise _bad(f"tensor {name!r:.200} cannot be viewed as {dtype}: {e}") from None
        self._cache[key] = out
        return out

    def _ndarray(self, node: dict, depth: int, in_key: bool) -> Any:
        want = node["dtype"]
        if type(want) is not str or not NUMPY_DTYPE.fullmatch(want):
            raise _bad(f"invalid numpy dtype {want!r:.40}")
        inner = node["tensor"]
        if type(inner) is not dict or inner.get(TAG) != "tensor":
            raise _bad("an 'ndarray' node wraps a 'tensor' node")
        t = self.value(inner, depth + 1, False)
        if self.tensors is None and self.specs is None:
            return TensorRef(inner["name"], "ndarray")
        if np is None:
            if self.tensors is None:
                return TensorRef(inner["name"], "ndarray")  # cannot check the numpy dtype; loading will say why
            raise CheckpointError("this checkpoint holds numpy arrays; install numpy to load it")
        name = inner["name"]
        carried = self._carried(inner, name)
        source = carried[0] if carried else self._stored(name)[0]
        dtype = self._numpy_target(name, source, want)
        if self.tensors is None:
            return TensorRef(name, "ndarray")
        key = ("np", id(t), want)
        if key not in self._cache:
            arr = t.detach().cpu().numpy()
            self._cache[key] = arr if dtype == arr.dtype else arr.astype(dtype)
        return self._cache[key]

    def _numpy_target(self, name: str, source: torch.dtype, want: str) -> Any:
        native = _numpy_dtype(source)
        try:
            dtype = np.dtype(want)
        except TypeError:
            dtype = None
        if native is None or dtype is None or dtype.newbyteorder("=") != native:
            raise _bad(f"tensor {name!r:.200} of dtype {source} cannot be a numpy array of {want!r}")
        return dtype


def _checked_keys(items: list, specs: Mapping[str, Spec]) -> list | None:
    """The keys of a mapping node's items when each item is a ``[string, value]`` pair whose value needs
    no check beyond what this does in C-level passes (a plain value, or a reference to a stored tensor
    without a carrier: every state_dict); None otherwise, and the items are checked one by one."""
    if not items or set(map(type, items)) != {list} or set(map(len, items)) != {2}:
        return None
    keys = list(map(_FIRST, items))
    values = list(map(_SECOND, items))
    kinds = set(map(type, values))
    if set(map(type, keys)) != {str} or not kinds <= _PLAIN | {dict}:
        return None
    if dict in kinds:
        nodes = [v for v in values if type(v) is dict]
        try:
            if set(map(len, nodes)) != {2} or set(map(itemgetter(TAG), nodes)) != {"tensor"}:
                return None
            names = list(map(itemgetter("name"), nodes))
        except (KeyError, TypeError):
            return None
        if set(map(type, names)) != {str} or not all(map(specs.__contains__, names)):
            return None
    return keys


_HANDLERS = {tag: getattr(_Decoder, "_" + tag) for tag in _FIELDS}  # tag -> method, looked up once
