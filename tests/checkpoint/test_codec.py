"""The state codec: every supported type round-trips exactly; unstorable values name their path;
malformed (untrusted) trees raise CheckpointCorruptError and nothing else."""

import argparse
import warnings
import json
import math
from collections import OrderedDict, defaultdict

import numpy as np
import pytest
import torch

from ember.checkpoint.format import codec, container
from ember.errors import CheckpointCorruptError, CheckpointError


def through_json(state):
    """flatten -> JSON text -> unflatten, with tensors cloned (as if read from a file)."""
    tree, tensors = codec.flatten(state)
    tree = json.loads(json.dumps(tree, allow_nan=False))
    return codec.unflatten(tree, {k: v.clone() for k, v in tensors.items()})


def through_file(state, tmp_path):
    """flatten -> .ckpt file -> read -> unflatten."""
    tree, tensors = codec.flatten(state)
    path = tmp_path / "c.ckpt"
    with open(path, "wb") as f:
        container.write(f, tree, tensors)
    return codec.unflatten(*container.read(path))


def assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    elif isinstance(a, complex):
        assert_same(a.real, b.real)
        assert_same(a.imag, b.imag)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert len(a) == len(b)
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            assert_same(ka, kb)
            assert_same(va, vb)
        assert_same(getattr(a, "_metadata", None), getattr(b, "_metadata", None))
    elif isinstance(a, argparse.Namespace):
        assert_same(vars(a), vars(b))
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        assert tensor_bytes(a) == tensor_bytes(b)
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        assert a.tobytes() == b.tobytes()
    else:
        assert a == b


def tensor_bytes(t):
    t = t.detach().contiguous().reshape(-1)
    return bytes(t.view(torch.uint8).numpy()) if t.numel() else b""


SCALARS = [
    None, True, False, 0, -1, 2**53 - 1, 2**53, -(2**70), 10**400, 0.1, -0.0, 0.0, 1e308, 5e-324,
    float("inf"), float("-inf"), float("nan"), "", "héllo ☃ \x00", "\ud800", b"", b"\x00\xff\x80",
    complex(1, -2), complex(float("nan"), float("inf")),
    torch.float16, torch.bfloat16, torch.bool, torch.Size([2, 3]), torch.Size([]),
    torch.device("cpu"), torch.device("cuda", 1), torch.device("meta"),
]  # fmt: skip


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalar_round_trips_exactly(value):
    assert_same(through_json({"v": value})["v"], value)


CONTAINERS = {
    "empty_list": [],
    "empty_tuple": (),
    "nested_list_tuple": [1, [2, (3, [4.5])], ()],
    "empty_dict": {},
    "int_keys": {0: {"step": 3}, 1: {"step": 4}},
    "mixed_keys": {(1, "a"): 1, None: 2, 1.5: 3, True: 4, b"k": 5, "s": 6, -7: 7, 2**60: 8, (): 9},
    "key_order_kept": {"b": 1, "a": 2, 3: 3, "c": 4},
    "dtype_device_keys": {torch.float32: "f", torch.device("cpu"): "c"},
    "ordered_dict": OrderedDict([("z", 1), ("a", 2)]),
    "namespace": argparse.Namespace(lr=0.1, layers=(1, 2), name="x", nested=argparse.Namespace(a=None)),
}


@pytest.mark.parametrize("name", CONTAINERS)
def test_container_round_trips_exactly(name):
    value = CONTAINERS[name]
    assert_same(through_json({"v": value})["v"], value)


def test_ordered_dict_metadata_round_trips():
    sd = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).state_dict()
    out = through_json({"state_dict": sd})["state_dict"]
    assert type(out) is OrderedDict
    assert out._metadata == sd._metadata
    assert list(out) == list(sd)


def test_top_level_ordered_dict_stays_ordered_dict():
    assert type(through_json(OrderedDict(a=1))) is OrderedDict


def _values(dtype):
    if dtype == torch.bool:
        return torch.tensor([[True, False, True], [False, False, True]])
    if dtype.is_complex:
        return torch.randn(2, 3, dtype=dtype)
    if dtype.is_floating_point:
        return torch.randn(2, 3).to(dtype)
    return torch.randint(0, 100, (2, 3)).to(dtype)


DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16, torch.int32,
    torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64, torch.bool, torch.complex64,
    torch.complex128,
] + [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
     if hasattr(torch, n)]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tensor_of_every_dtype_round_trips_through_a_file(dtype, tmp_path):
    t = _values(dtype)
    assert_same(through_file({"t": t}, tmp_path)["t"], t)


@pytest.mark.parametrize(
    "t",
    [torch.tensor(3.5), torch.empty(0), torch.empty(0, 3), torch.arange(12.0).reshape(3, 4).T, torch.arange(10)[::3]],
    ids=["0-dim", "empty", "empty-2d", "transposed", "strided"],
)
def test_tensor_shape_edge_cases_round_trip(t, tmp_path):
    out = through_file({"t": t}, tmp_path)["t"]
    assert_same(out, t)
    assert out.is_contiguous()


def test_complex_tensor_with_conj_bit_stores_resolved_values(tmp_path):
    t = torch.tensor([1 + 2j, 3 - 4j]).conj()
    assert torch.equal(through_file({"t": t}, tmp_path)["t"], t.resolve_conj())


def test_parameter_comes_back_as_plain_tensor_without_grad(tmp_path):
    p = torch.nn.Parameter(torch.ones(2))
    out = through_file({"p": p}, tmp_path)["p"]
    assert type(out) is torch.Tensor
    assert not out.requires_grad
    assert torch.equal(out, torch.ones(2))


def test_same_tensor_twice_is_stored_once_and_comes_back_as_one_object(tmp_path):
    t = torch.arange(4.0)
    tree, tensors = codec.flatten({"a": t, "b": [t]})
    assert list(tensors) == ["a"]
    out = through_file({"a": t, "b": [t]}, tmp_path)
    assert out["a"] is out["b"][0]


def test_tied_weights_in_a_state_dict_stay_tied(tmp_path):
    emb = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    sd = torch.nn.ModuleDict({"emb": emb, "head": head}).state_dict()
    _, tensors = codec.flatten({"state_dict": sd})
    assert list(tensors) == ["state_dict.emb.weight"]
    out = through_file({"state_dict": sd}, tmp_path)["state_dict"]
    assert out["emb.weight"] is out["head.weight"]


def test_different_views_of_one_storage_are_stored_separately(tmp_path):
    base = torch.arange(6.0)
    out = through_file({"a": base[:3], "b": base[3:]}, tmp_path)
    assert torch.equal(out["a"], base[:3]) and torch.equal(out["b"], base[3:])


@pytest.mark.parametrize("dtype", ["<f4", ">f8", "|b1", "<i8", ">u2", "|u1", "<c16", "<f2"])
def test_numpy_array_comes_back_as_numpy_array_with_same_dtype(dtype, tmp_path):
    a = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    out = through_file({"a": a}, tmp_path)["a"]
    assert_same(out, a)


def test_numpy_zero_dim_and_non_contiguous_arrays_round_trip(tmp_path):
    a0 = np.array(2.5)
    a1 = np.arange(12).reshape(3, 4)[:, ::2]
    out = through_file({"a0": a0, "a1": a1}, tmp_path)
    assert_same(out["a0"], a0)
    assert_same(out["a1"], np.ascontiguousarray(a1))


def test_numpy_rng_state_round_trips(tmp_path):
    state = np.random.RandomState(3).get_state()
    out = through_file({"rng": state}, tmp_path)["rng"]
    assert_same(out, state)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(np.float32(1.5), 1.5), (np.int64(-3), -3), (np.bool_(True), True), (np.float64(0.1), 0.1), (np.uint8(7), 7)],
    ids=repr,
)
def test_numpy_scalar_comes_back_as_python_scalar(value, expected):
    assert_same(through_json({"v": value})["v"], expected)


def test_weights_are_named_under_state_dict_prefix_with_key_as_is():
    sd = OrderedDict([("l1.weight", torch.ones(2)), ("l1.bias", torch.zeros(2))])
    _, tensors = codec.flatten({"state_dict": sd, "epoch": 1})
    assert list(tensors) == ["state_dict.l1.weight", "state_dict.l1.bias"]


def test_optimizer_state_tensor_names_are_dotted_paths():
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([p])
    p.grad = torch.ones(2)
    opt.step()
    _, tensors = codec.flatten({"optimizer_states": [opt.state_dict()]})
    assert "optimizer_states.0.state.0.exp_avg" in tensors
    assert "optimizer_states.0.state.0.exp_avg_sq" in tensors


def test_colliding_names_get_deterministic_suffixes():
    state = {"a": {"b": torch.ones(1)}, "a.b": torch.zeros(1), 0: torch.ones(1), "0": torch.zeros(1)}
    names1 = list(codec.flatten(state)[1])
    names2 = list(codec.flatten(state)[1])
    assert names1 == ["a.b", "a.b#2", "0", "0#2"]
    assert names1 == names2


def test_metadata_name_is_never_used_for_a_tensor():
    _, tensors = codec.flatten({"__metadata__": torch.ones(1)})
    assert "__metadata__" not in tensors


def test_non_string_keys_make_readable_names():
    _, tensors = codec.flatten({"s": {(1, 2): torch.ones(1), None: torch.ones(1), 2.5: torch.ones(1)}})
    assert list(tensors) == ["s.(1, 2)", "s.None", "s.2.5"]


def test_flatten_does_not_copy_contiguous_tensors():
    t = torch.ones(3)
    _, tensors = codec.flatten({"t": t})
    assert tensors["t"].data_ptr() == t.data_ptr()


def test_tensors_none_decodes_references():
    tree, _ = codec.flatten({"w": torch.ones(1), "a": np.ones(2), "epoch": 3})
    out = codec.unflatten(tree, None)
    assert out["w"] == codec.TensorRef("w")
    assert out["a"].kind == "ndarray"
    assert out["epoch"] == 3


def _f():
    pass


class _Thing:
    pass


def _quantized():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated in torch
        return torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)


UNSTORABLE = {
    "function": ({"callbacks": {"MyCallback": {"fn": _f}}}, "callbacks.MyCallback.fn", "function"),
    "lambda": ({"a": [1, lambda: 0]}, "a.1", "function"),
    "object": ({"x": {"y": _Thing()}}, "x.y", "_Thing"),
    "module": ({"model": torch.nn.Linear(1, 1)}, "model", "Linear"),
    "set_member": ({"s": {range(1)}}, "s.0", "set member"),
    "bytearray": ({"b": bytearray(b"x")}, "b", "bytearray"),
    "defaultdict": ({"d": defaultdict(int)}, "d", "defaultdict"),
    "sparse": ({"t": torch.eye(2).to_sparse()}, "t", "to_dense"),
    "meta": ({"t": torch.empty(2, device="meta")}, "t", "meta"),
    "quantized": ({"t": _quantized()}, "t", "quantized"),
    "object_array": ({"a": np.array([None, 1], dtype=object)}, "a", "numpy"),
    "datetime_scalar": ({"d": np.datetime64("2020-01-01")}, "d", "datetime64"),
    "bad_key": ({"d": {range(1): 1}}, "d.range(0, 1)", "key"),
}


@pytest.mark.parametrize("case", UNSTORABLE)
def test_unstorable_value_raises_naming_its_path(case):
    state, path, word = UNSTORABLE[case]
    with pytest.raises(CheckpointError) as e:
        codec.flatten(state)
    msg = str(e.value)
    assert msg.startswith(path + ": ")
    assert "cannot be stored in a checkpoint" in msg
    assert word in msg


def test_unstorable_function_message_tells_what_to_store():
    with pytest.raises(CheckpointError, match=r"store plain data \(numbers, strings, lists, dicts, tensors\) instead"):
        codec.flatten({"callbacks": {"MyCallback": {"fn": _f}}})


def test_non_dict_state_is_refused():
    with pytest.raises(CheckpointError, match="must be a dict"):
        codec.flatten([1, 2])


def test_too_deep_nesting_is_refused_when_writing():
    deep = []
    for _ in range(codec.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(CheckpointError, match="nested more than"):
        codec.flatten({"d": deep})


def _deep_list(n):
    v = []
    for _ in range(n):
        v = [v]
    return {"$": "dict", "items": [["d", v]]}


def _d(*pairs):
    return {"$": "dict", "items": [list(p) for p in pairs]}


T = {"$": "tensor", "name": "t"}
MALFORMED = {
    "top_is_list": [1, 2],
    "top_is_int": 5,
    "top_is_tuple": {"$": "tuple", "items": []},
    "object_without_tag": {"a": 1},
    "unknown_tag": _d(["x", {"$": "pickle", "v": "cos\nsystem"}]),
    "tag_not_string": {"$": 5, "items": []},
    "missing_field": {"$": "dict"},
    "extra_field": {"$": "dict", "items": [], "x": 1},
    "items_not_list": {"$": "dict", "items": {"a": 1}},
    "pair_too_short": {"$": "dict", "items": [["a"]]},
    "pair_not_list": {"$": "dict", "items": ["a"]},
    "list_key": _d([[1], 2]),
    "dict_key": _d([{"$": "dict", "items": []}, 2]),
    "tensor_key": _d([T, 2]),
    "duplicate_key": _d(["a", 1], ["a", 2]),
    "missing_tensor": _d(["w", {"$": "tensor", "name": "nope"}]),
    "tensor_name_not_string": _d(["w", {"$": "tensor", "name": 5}]),
    "int_not_hex": _d(["i", {"$": "int", "v": "12"}]),
    "int_not_string": _d(["i", {"$": "int", "v": 12}]),
    "float_tag_finite": _d(["f", {"$": "float", "v": "1.5"}]),
    "bare_nan": _d(["f", float("nan")]),
    "bad_base64": _d(["b", {"$": "bytes", "b64": "!!!"}]),
    "base64_not_string": _d(["b", {"$": "bytes", "b64": 3}]),
    "unknown_dtype": _d(["d", {"$": "dtype", "v": "float1024"}]),
    "dtype_attribute_name": _d(["d", {"$": "dtype", "v": "__class__"}]),
    "negative_size": _d(["s", {"$": "size", "v": [-1]}]),
    "bool_in_size": _d(["s", {"$": "size", "v": [True]}]),
    "garbage_device": _d(["d", {"$": "device", "v": "not a device"}]),
    "unknown_device_type": _d(["d", {"$": "device", "v": "nosuchdevice:0"}]),
    "complex_with_string": _d(["c", {"$": "complex", "re": "1", "im": 0.0}]),
    "namespace_int_name": {"$": "dict", "items": [["n", {"$": "namespace", "items": [[1, 2]]}]]},
    "ndarray_object_dtype": _d(["a", {"$": "ndarray", "dtype": "|O", "tensor": T}]),
    "ndarray_wrong_dtype": _d(["a", {"$": "ndarray", "dtype": "<f8", "tensor": T}]),
    "ndarray_inner_not_tensor": _d(["a", {"$": "ndarray", "dtype": "<f4", "tensor": 1}]),
    "carrier_size_mismatch": _d(["c", {"$": "tensor", "name": "t", "dtype": "complex128", "shape": [5]}]),
    "carrier_dtype_without_shape": _d(["c", {"$": "tensor", "name": "t", "dtype": "complex128"}]),
    "carrier_unknown_dtype": _d(["c", {"$": "tensor", "name": "t", "dtype": "nope", "shape": [1]}]),
    "carrier_bad_shape": _d(["c", {"$": "tensor", "name": "t", "dtype": "float32", "shape": "3"}]),
    "not_json_object": _d(["x", object()]),
    "deep_nesting": _deep_list(10_000),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_tree_raises_corrupt_error(case):
    with pytest.raises(CheckpointCorruptError):
        codec.unflatten(MALFORMED[case], {"t": torch.ones(2)})


def test_carrier_tensor_is_viewed_back_as_its_dtype():
    c = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex128)
    tree, tensors = codec.flatten({"c": c})
    assert tensors["c"].dtype == torch.int64
    assert torch.equal(codec.unflatten(tree, tensors)["c"], c)
