"""Sets, frozensets, pathlib paths and enum members in the state tree: exact round trips, and
loading never imports anything (an enum whose class is not imported comes back as its value)."""

from __future__ import annotations

import enum
import json
import subprocess
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
import torch

import ember
from ember.checkpoint.format import codec
from ember.errors import CheckpointCorruptError


class Color(enum.Enum):
    RED = "red"
    BLUE = (0, 255)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2


def round_trip(state):
    tree, tensors = codec.flatten(state)
    return codec.unflatten(json.loads(json.dumps(tree)), tensors)


@pytest.mark.parametrize("value", [
    {1, 2, 3}, frozenset({"a", ("b", 1)}), set(), {frozenset({1}), frozenset()},
    Path("/data/run/x.ckpt"), PurePosixPath("a/b"), PureWindowsPath(r"C:\\runs\\x"),
    Color.RED, Color.BLUE, Level.HIGH, Perm.R | Perm.W,
    [Color.RED, (Level.LOW, {Path("p")})],
])
def test_typed_values_round_trip_exactly(value):
    out = round_trip({"v": value})["v"]
    assert out == value and type(out) is type(value)


def test_typed_values_work_as_dict_keys():
    state = {"by": {Color.RED: 1, Path("a"): 2, frozenset({1, 2}): 3, Level.LOW: 4}}
    out = round_trip(state)["by"]
    assert out == state["by"] and [type(k) for k in out] == [Color, type(Path("a")), frozenset, Level]


def test_a_set_is_written_in_sorted_order():
    tree, _ = codec.flatten({"s": {3, 1, 2}})
    assert tree["items"][0][1] == {"$": "set", "items": [1, 2, 3]}


def test_an_enum_is_stored_by_class_name_member_and_value():
    tree, _ = codec.flatten({"c": Color.BLUE})
    assert tree["items"][0][1] == {"$": "enum", "cls": f"{__name__}:Color", "name": "BLUE",
                                   "v": {"$": "tuple", "items": [0, 255]}}


def test_an_enum_whose_class_is_not_imported_loads_as_its_value_without_importing(tmp_path):
    marker = tmp_path / "imported"
    pkg = tmp_path / "enum_pkg_x"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        f"import enum, pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "class Mode(enum.Enum):\n    FAST = 'fast'\n")
    path = tmp_path / "e.ckpt"
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import ember, enum_pkg_x, torch; "
            f"ember.save_checkpoint({{'mode': enum_pkg_x.Mode.FAST, 'w': torch.ones(1)}}, {str(path)!r})")
    subprocess.run([sys.executable, "-c", code], check=True)
    marker.unlink()
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.warns(UserWarning, match=r"enum enum_pkg_x:Mode, which is not imported"):
            ckpt = ember.load_checkpoint(path)
    finally:
        sys.path.remove(str(tmp_path))
    assert ckpt["mode"] == "fast" and "enum_pkg_x" not in sys.modules and not marker.exists()


@pytest.mark.parametrize("node, why", [
    ({"$": "set", "items": [1, 1]}, "lists a member twice"),
    ({"$": "set", "items": [[1]]}, "a list cannot be a dict key"),
    ({"$": "path", "kind": "nfs", "v": "a"}, "holds a kind in"),
    ({"$": "path", "kind": "posix", "v": 3}, "holds a kind in"),
    ({"$": "enum", "cls": "os; rm -rf", "name": "A", "v": 1}, "module:qualname"),
    ({"$": "enum", "cls": "m:C", "name": 3, "v": 1}, "module:qualname"),
])
def test_malformed_typed_nodes_are_corrupt(node, why):
    tree = {"$": "dict", "items": [["x", node]]}
    with pytest.raises(CheckpointCorruptError, match=why):
        codec.unflatten(tree, {})


def test_a_checkpoint_with_typed_values_survives_a_file_round_trip(tmp_path):
    state = {"tags": {"a", "b"}, "root": Path("/tmp/x"), "color": Color.RED, "w": torch.arange(3)}
    ember.save_checkpoint(state, tmp_path / "t.ckpt")
    out = ember.load_checkpoint(tmp_path / "t.ckpt")
    assert out["tags"] == {"a", "b"} and out["root"] == Path("/tmp/x") and out["color"] is Color.RED


def test_a_path_saved_on_another_system_keeps_its_syntax():
    tree = {"$": "dict", "items": [["p", {"$": "path", "kind": "windows", "v": "C:\\runs\\a"}]]}
    out = codec.unflatten(tree, {})["p"]
    assert type(out) is PureWindowsPath and out.name == "a"
