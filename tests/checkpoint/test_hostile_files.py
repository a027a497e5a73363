"""Files whose checksums are right but whose content is hostile: verify refuses exactly what load
refuses, naming the file, and structure limits are enforced before any JSON is parsed."""

from __future__ import annotations

import io
import json
import pathlib
import struct

import pytest
import torch
from crc32c import crc32c

from ember.checkpoint.format import codec, container, torch_files, header
from ember.checkpoint import reader
from ember.errors import CheckpointCorruptError, CheckpointError, UnsafeCheckpointError

PREFIX = header.HEADER_PREFIX
P = len(PREFIX)


def signed_file(path, state_json: str, tensors=None) -> pathlib.Path:
    """An ember file holding ``tensors`` whose state tree is the given JSON text, correctly checksummed."""
    buf = io.BytesIO()
    container.write(buf, {"$": "dict", "items": []}, tensors if tensors is not None else {"w": torch.ones(2)})
    data = buf.getvalue()
    n = struct.unpack("<Q", data[:8])[0]
    h = json.loads(data[8 : 8 + n])
    h["__metadata__"]["ember.state"] = state_json
    raw = json.dumps(h, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    prefix = struct.pack("<Q", len(raw))
    crc = crc32c(prefix + raw[:P] + b"00000000" + raw[P + 8 :])
    raw = raw[:P] + b"%08x" % crc + raw[P + 8 :]
    pathlib.Path(path).write_bytes(prefix + raw + data[8 + n :])
    return pathlib.Path(path)


def state_with(value: str) -> str:
    return '{"$":"dict","items":[["x",' + value + "]]}"


def nested_lists(depth: int) -> str:
    return "[" * depth + "]" * depth


INVALID_TREES = {
    "tensor_dtype_is_a_list": state_with('{"$":"tensor","name":"w","dtype":["float32"],"shape":[2]}'),
    "tensor_shape_is_a_dict": state_with(
        '{"$":"tensor","name":"w","dtype":"complex32","shape":{"$":"dict","items":[]}}'),
    "deeper_than_the_decoder_allows": state_with(nested_lists(codec.MAX_DEPTH + 10)),
    "unknown_carried_dtype": state_with('{"$":"tensor","name":"w","dtype":"float99","shape":[1]}'),
    "quantized_carried_dtype": state_with('{"$":"tensor","name":"w","dtype":"qint8","shape":[8]}'),
    "wrong_carrier_for_the_dtype": state_with('{"$":"tensor","name":"w","dtype":"complex64","shape":[1]}'),
    "carried_size_mismatch": state_with('{"$":"tensor","name":"w","dtype":"complex32","shape":[3]}'),
    "reference_to_a_missing_tensor": state_with('{"$":"tensor","name":"nope"}'),
    "ndarray_of_an_impossible_dtype": state_with('{"$":"ndarray","dtype":"<i8","tensor":{"$":"tensor","name":"w"}}'),
    "unhashable_key": '{"$":"dict","items":[[[1],2]]}',
}


@pytest.mark.parametrize("case", INVALID_TREES)
def test_verify_refuses_a_checksummed_file_with_an_invalid_state_tree(tmp_path, case):
    path = signed_file(tmp_path / "bad.ckpt", INVALID_TREES[case])
    with pytest.raises(CheckpointCorruptError, match="malformed state tree") as e:
        container.verify_file(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("case", INVALID_TREES)
def test_every_load_path_refuses_an_invalid_state_tree_naming_the_file(tmp_path, case):
    path = signed_file(tmp_path / "bad.ckpt", INVALID_TREES[case])
    for load in (reader.load_any, container.read, container.read_header,
                 lambda p: reader.load_any(p, mmap=True, verify=False)):
        with pytest.raises(CheckpointCorruptError) as e:
            load(path)
        assert str(path) in str(e.value)


def test_the_signed_helper_makes_files_that_load(tmp_path):
    path = signed_file(tmp_path / "ok.ckpt", state_with('{"$":"tensor","name":"w"}'))
    container.verify_file(path)
    assert torch.equal(reader.load_any(path)["x"], torch.ones(2))


def test_unflatten_refuses_a_list_dtype_without_a_type_error():
    tree = {"$": "dict", "items": [["x", {"$": "tensor", "name": "w", "dtype": ["float32"], "shape": [2]}]]}
    with pytest.raises(CheckpointCorruptError, match="unknown dtype"):
        codec.unflatten(tree, {"w": torch.ones(2)})


def test_validate_accepts_what_unflatten_accepts():
    state = {"c": torch.ones(3, dtype=torch.complex128), "a": __import__("numpy").arange(3), "w": torch.ones(2)}
    tree, tensors = codec.flatten(state)
    codec.validate(tree, {k: (t.dtype, tuple(t.shape)) for k, t in tensors.items()})


# ----------------------------------------------------------------------------- limits before parsing


def refuse_json(monkeypatch):
    def no_parse(*a, **k):
        raise AssertionError("the header was parsed as JSON before its structure was checked")

    monkeypatch.setattr(header, "loads", no_parse)


def test_a_header_with_more_lists_than_allowed_is_refused_before_json_parsing(tmp_path, monkeypatch):
    many = "[" + "[]," * header.MAX_CONTAINERS + "[]]"  # a little over the limit; ~3 MiB
    path = signed_file(tmp_path / "many.ckpt", state_with(many))
    refuse_json(monkeypatch)
    with pytest.raises(CheckpointCorruptError, match="more than the 1048576 allowed") as e:
        container.verify_file(path)
    assert str(path) in str(e.value)


def test_a_header_with_more_objects_than_allowed_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(header, "MAX_CONTAINERS", 100)
    path = signed_file(tmp_path / "objs.ckpt", state_with("[" + ",".join(['{"$":"int","v":"0x1"}'] * 101) + "]"))
    with pytest.raises(CheckpointCorruptError, match="'{' or '}' bytes"):
        reader.load_any(path)


def test_a_header_nested_deeper_than_allowed_is_refused_before_json_parsing(tmp_path, monkeypatch):
    path = signed_file(tmp_path / "deep.ckpt", state_with(nested_lists(header.MAX_NESTING + 1)))
    refuse_json(monkeypatch)
    with pytest.raises(CheckpointCorruptError, match="nests"):
        container.read_header(path)


def test_a_state_too_large_to_read_back_is_refused_when_saving(monkeypatch):
    monkeypatch.setattr(header, "MAX_CONTAINERS", 100)
    tree, tensors = codec.flatten({"lists": [[] for _ in range(200)]})
    buf = io.BytesIO()
    with pytest.raises(CheckpointError, match="could not be read back"):
        container.write(buf, tree, tensors)
    assert buf.getvalue() == b""


def test_a_legitimate_header_passes_the_structure_limits():
    model = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(50)])
    tree, tensors = codec.flatten({"state_dict": model.state_dict(), "hp": {"pattern": "[[[" * 10}})
    buf = io.BytesIO()
    container.write(buf, tree, tensors)
    n = struct.unpack("<Q", buf.getvalue()[:8])[0]
    assert header.structure_problem(buf.getvalue()[8 : 8 + n]) is None


# ----------------------------------------------------------------------------- torch.save files


def truncated_legacy_file(tmp_path) -> pathlib.Path:
    """A harmless legacy torch.save file cut in the middle of the global name torch._utils._rebuild_tensor_v2."""
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(100)}, "epoch": 3}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    cut = data.index(b"_rebuild_tensor_v2") + len("_rebuild_te")
    path = tmp_path / "cut.pt"
    path.write_bytes(data[:cut])
    return path


def test_a_truncated_legacy_torch_file_is_corrupt_not_unsafe(tmp_path):
    path = truncated_legacy_file(tmp_path)
    with pytest.raises(CheckpointCorruptError, match="truncated") as e:
        reader.load_any(path)
    assert str(path) in str(e.value) and "weights_only=False" not in str(e.value)


def test_load_foreign_reports_a_truncated_legacy_file_as_corrupt(tmp_path):
    with pytest.raises(CheckpointCorruptError, match="truncated"):
        torch_files.load_foreign(truncated_legacy_file(tmp_path))


def test_a_refused_global_that_names_nothing_is_damage_not_danger():
    assert torch_files._names_nothing("torch._utils._rebuild_te")


@pytest.mark.parametrize("name", ["pathlib.Path.touch", "os.system", "__main__.MyModel", "not_imported_pkg.Thing"])
def test_a_refused_global_that_may_exist_is_treated_as_unsafe(name):
    assert not torch_files._names_nothing(name)


def test_an_intact_legacy_pickle_that_runs_code_is_still_unsafe(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": pathlib.Path.home}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="running code"):
        reader.load_any(path)


# ---------------------------------------------------------------------------- torch.save values: bounded, numeric numpy


def lightning_file(path, hyper_parameters) -> pathlib.Path:
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.6",
                "hyper_parameters": hyper_parameters}, path)
    return pathlib.Path(path)


def test_a_tiny_file_of_shared_references_is_refused_before_it_is_expanded(tmp_path):
    nested = [1]
    for _ in range(60):
        nested = [nested, nested]  # 2**60 leaves once expanded; a few hundred bytes on disk
    path = lightning_file(tmp_path / "bomb.ckpt", {"x": nested})
    from ember.checkpoint.lightning.convert import convert
    from ember.checkpoint.io import load_checkpoint

    for attempt in (lambda: load_checkpoint(path), lambda: convert(path, tmp_path / "out.ckpt")):
        with pytest.raises(CheckpointCorruptError, match=r"bomb.ckpt.* expands to more than 5000000 values"):
            attempt()


def test_a_shared_tensor_and_a_long_list_still_load(tmp_path):
    from ember.checkpoint.io import load_checkpoint

    w = torch.ones(3)
    path = lightning_file(tmp_path / "ok.ckpt", {"sizes": list(range(100_000)), "a": [w, w]})
    assert load_checkpoint(path)["hyper_parameters"]["sizes"][-1] == 99_999


def test_numeric_numpy_arrays_and_scalars_in_hyper_parameters_load(tmp_path):
    import numpy as np

    from ember.checkpoint.io import load_checkpoint

    hp = {"grid": np.arange(6, dtype=np.float32).reshape(2, 3), "mask": np.array([True, False]),
          "lr": np.float64(0.5), "n": np.int64(7), "big": np.arange(3, dtype=">i4")}
    hp_loaded = load_checkpoint(lightning_file(tmp_path / "np.ckpt", hp))["hyper_parameters"]
    for k, v in hp.items():
        assert type(hp_loaded[k]) is type(v) and hp_loaded[k].dtype == v.dtype and np.array_equal(hp_loaded[k], v), k


def test_a_numpy_object_array_in_hyper_parameters_is_still_refused(tmp_path):
    import numpy as np

    from ember.checkpoint.io import load_checkpoint

    path = lightning_file(tmp_path / "obj.ckpt", {"x": np.array([{"a": 1}, None], dtype=object)})
    with pytest.raises(UnsafeCheckpointError, match="numpy dtype .O8. refused: only numeric numpy arrays"):
        load_checkpoint(path)
