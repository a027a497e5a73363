"""The .ckpt container: round trip, safetensors compatibility, every malformation class refused with
the right error, foreign files (torch.save) loaded weights-only or refused."""

import io
import json
import os
import pathlib
import struct
from crc32c import crc32c
from collections import OrderedDict

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ember.checkpoint.format import checksums, codec, container, header
from ember.checkpoint import reader
from ember.checkpoint.format.torch_files import load_foreign
from ember.errors import CheckpointCorruptError, CheckpointError, CheckpointVersionError, UnsafeCheckpointError

PREFIX = b'{"__metadata__":{"ember.header_crc32c":"'
P = len(PREFIX)  # the checksum digits sit at header bytes [P, P + 8), file bytes [8 + P, 16 + P)


def make_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(OrderedDict(l1=torch.nn.Linear(3, 4), l2=torch.nn.Linear(4, 2)))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    return {
        "state_dict": model.state_dict(),
        "optimizer_states": [opt.state_dict()],
        "epoch": 2,
        "global_step": 40,
        "mask": torch.tensor([True, False]),
        "half": torch.randn(3).to(torch.bfloat16),
    }


def save(state, path):
    tree, tensors = codec.flatten(state)
    with open(path, "wb") as f:
        container.write(f, tree, tensors)
    return path


def load(path, **kw):
    return codec.unflatten(*container.read(path, **kw))


def assert_states_equal(a, b):
    assert list(a["state_dict"]) == list(b["state_dict"])
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k])
    assert torch.equal(a["optimizer_states"][0]["state"][0]["exp_avg"], b["optimizer_states"][0]["state"][0]["exp_avg"])
    assert a["optimizer_states"][0]["param_groups"] == b["optimizer_states"][0]["param_groups"]
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["half"], b["half"])


@pytest.fixture
def ckpt(tmp_path):
    return save(make_state(), tmp_path / "good.ckpt")


def split(path):
    data = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return data, n, json.loads(data[8 : 8 + n])


def rewrite_header(path, edit, *, sign=True, raw=None):
    """Apply edit(header_dict) and write the file back with a correct length prefix; re-sign the
    header checksum as FORMAT.md section 4 says (so that structural checks, not the CRC, are tested)."""
    data, n, header = split(path)
    if raw is None:
        edit(header)
        raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    prefix = struct.pack("<Q", len(raw))
    if sign and raw.startswith(PREFIX):
        crc = crc32c(prefix + raw[:P] + b"00000000" + raw[P + 8 :])
        raw = raw[:P] + b"%08x" % crc + raw[P + 8 :]
    pathlib.Path(path).write_bytes(prefix + raw + data[8 + n :])


# ----------------------------------------------------------------------------- round trip & layout


def test_round_trip_restores_every_value(ckpt):
    assert_states_equal(load(ckpt), make_state())


def test_safetensors_load_file_finds_weights_under_state_dict_prefix(ckpt):
    tensors = load_file(ckpt)
    assert torch.equal(tensors["state_dict.l1.weight"], make_state()["state_dict"]["l1.weight"])
    assert "optimizer_states.0.state.0.exp_avg" in tensors


def test_safe_open_sees_ember_metadata(ckpt):
    with safe_open(ckpt, "pt") as f:
        meta = f.metadata()
        assert meta["ember.format"] == "1"
        assert "state_dict.l2.bias" in f.keys()
    assert json.loads(meta["ember.state"])["$"] == "dict"


def test_data_section_is_8_aligned_and_each_tensor_aligned_to_its_itemsize(ckpt):
    data, n, header = split(ckpt)
    assert (8 + n) % 8 == 0
    sizes = {"F32": 4, "BF16": 2, "BOOL": 1, "I64": 8}
    for name, e in header.items():
        if name != "__metadata__":
            assert e["data_offsets"][0] % sizes[e["dtype"]] == 0, name


def test_header_checksum_follows_the_spec(ckpt):
    data, n, header = split(ckpt)
    assert data[8 : 8 + P] == PREFIX
    blanked = data[: 8 + P] + b"00000000" + data[16 + P : 8 + n]
    assert crc32c(blanked) == int(header["__metadata__"]["ember.header_crc32c"], 16)


def test_tensor_checksums_follow_the_spec(ckpt):
    data, n, header = split(ckpt)
    crcs = json.loads(header["__metadata__"]["ember.crc32c"])
    for name, e in header.items():
        if name != "__metadata__":
            b, end = e["data_offsets"]
            assert crc32c(data[8 + n + b : 8 + n + end]) == int(crcs[name], 16)


def test_write_needs_only_a_write_method(ckpt):
    class WriteOnly:
        def __init__(self):
            self.parts = []

        def write(self, b):
            self.parts.append(bytes(b))
            return len(b)

    out = WriteOnly()
    container.write(out, *codec.flatten(make_state()))
    assert b"".join(out.parts) == pathlib.Path(ckpt).read_bytes()


def test_write_in_small_chunks_gives_identical_bytes(ckpt, monkeypatch):
    monkeypatch.setattr(container, "CHUNK", 7)
    buf = io.BytesIO()
    container.write(buf, *codec.flatten(make_state()))
    assert buf.getvalue() == pathlib.Path(ckpt).read_bytes()


def test_write_refuses_invalid_tensors_before_writing_a_byte():
    buf = io.BytesIO()
    with pytest.raises(CheckpointError):
        container.write(buf, {}, {"a": torch.ones(1), "b": "not a tensor"})
    assert buf.getvalue() == b""


def test_parallel_crc_pieces_combine_to_the_plain_crc(monkeypatch):
    monkeypatch.setattr(checksums, "_PIECE", 1000)
    bufs = [memoryview(os.urandom(n)) for n in (0, 1, 999, 1000, 1001, 7777)]
    assert checksums.crc32_many(bufs) == [crc32c(b) for b in bufs]


def test_crc32_combine_matches_crc_of_concatenation():
    a, b = os.urandom(333), os.urandom(100_003)
    assert checksums.crc32_combine(crc32c(a), crc32c(b), len(b)) == crc32c(a + b)


def test_empty_state_round_trips(tmp_path):
    assert load(save({}, tmp_path / "e.ckpt")) == {}


def test_mmap_load_returns_equal_values(ckpt):
    assert_states_equal(load(ckpt, mmap=True), make_state())


def test_mmap_tensors_are_writable_without_changing_the_file(ckpt):
    before = pathlib.Path(ckpt).read_bytes()
    out = load(ckpt, mmap=True, verify=False)
    out["state_dict"]["l1.weight"].add_(1)
    assert pathlib.Path(ckpt).read_bytes() == before


def test_map_location_moves_tensors(ckpt):
    out = load(ckpt, map_location="meta")
    assert out["state_dict"]["l1.weight"].device.type == "meta"


def test_read_header_reports_format_and_tensors_without_loading(ckpt):
    h = container.read_header(ckpt)
    assert (h["kind"], h["format_version"]) == ("ember", 1)
    assert isinstance(h["ember_version"], str)
    assert h["tensors"]["state_dict.l1.weight"]["shape"] == (4, 3)
    assert h["tensors"]["state_dict.l1.weight"]["nbytes"] == 48
    assert h["tensors"]["half"]["dtype"] == torch.bfloat16
    assert codec.unflatten(h["tree"], None)["global_step"] == 40


def test_verify_file_accepts_a_good_file(ckpt):
    container.verify_file(ckpt)


def test_is_ember_file_sniffs(ckpt, tmp_path):
    save_file({"w": torch.ones(2)}, tmp_path / "plain.safetensors")
    torch.save({"w": torch.ones(2)}, tmp_path / "t.pt")
    (tmp_path / "empty").write_bytes(b"")
    assert container.is_ember_file(ckpt)
    for other in ("plain.safetensors", "t.pt", "empty", "missing"):
        assert not container.is_ember_file(tmp_path / other)


# ----------------------------------------------------------------------------- corruption


def flip(path, offset, bit=0):
    data = bytearray(pathlib.Path(path).read_bytes())
    data[offset] ^= 1 << bit
    pathlib.Path(path).write_bytes(bytes(data))


def expect(exc, path, fn=load, match=None, **kw):
    with pytest.raises(exc) as e:
        fn(path, **kw)
    assert str(path) in str(e.value)
    if match:
        assert match in str(e.value), str(e.value)
    return e.value


def test_bit_flip_in_tensor_data_is_detected_naming_the_tensor(ckpt):
    flip(ckpt, os.path.getsize(ckpt) - 1)  # the last byte belongs to the last tensor in data order
    expect(CheckpointCorruptError, ckpt, match=f"tensor {_last_entry(ckpt)!r}")


def test_bit_flip_in_tensor_data_fails_verify_file(ckpt):
    flip(ckpt, os.path.getsize(ckpt) - 1)
    expect(CheckpointCorruptError, ckpt, container.verify_file, match="CRC-32")


def test_bit_flip_in_tensor_data_detected_with_mmap_and_verify(ckpt):
    flip(ckpt, os.path.getsize(ckpt) - 1)
    expect(CheckpointCorruptError, ckpt, mmap=True)


def test_bit_flip_in_header_is_detected_even_without_data_verification(ckpt):
    _, n, _ = split(ckpt)
    flip(ckpt, 8 + n - 20)  # inside the tensor entries' JSON
    expect(CheckpointCorruptError, ckpt, verify=False, mmap=True)


def test_bit_flip_in_padding_is_detected(ckpt):
    data, n, _ = split(ckpt)
    assert data[8 + n - 1 : 8 + n] in (b" ", b"}")
    flip(ckpt, 8 + n - 1, 1)
    expect(CheckpointCorruptError, ckpt)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 30, 60])
def test_truncated_at_the_start_is_corrupt(ckpt, size):
    pathlib.Path(ckpt).write_bytes(pathlib.Path(ckpt).read_bytes()[:size])
    expect(CheckpointCorruptError, ckpt)


def test_truncated_in_the_data_is_corrupt(ckpt):
    pathlib.Path(ckpt).write_bytes(pathlib.Path(ckpt).read_bytes()[:-3])
    expect(CheckpointCorruptError, ckpt, match="truncated")


def test_appended_bytes_are_corrupt(ckpt):
    with open(ckpt, "ab") as f:
        f.write(b"\0" * 8)
    expect(CheckpointCorruptError, ckpt, match="unexpected bytes")


def test_header_length_larger_than_file_is_corrupt(ckpt):
    data = pathlib.Path(ckpt).read_bytes()
    pathlib.Path(ckpt).write_bytes(struct.pack("<Q", len(data)) + data[8:])
    expect(CheckpointCorruptError, ckpt, match="header length")


def test_absurd_header_length_is_corrupt_without_allocating(ckpt):
    data = pathlib.Path(ckpt).read_bytes()
    pathlib.Path(ckpt).write_bytes(struct.pack("<Q", 2**63 + 5) + data[8:])
    expect(CheckpointCorruptError, ckpt, match="header length")


def test_header_length_over_the_cap_is_corrupt(tmp_path):
    path = tmp_path / "sparse.ckpt"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", container.MAX_HEADER + 8) + b"{")
        f.truncate(container.MAX_HEADER + 64)  # sparse: no real disk use
    expect(CheckpointCorruptError, path, match="allowed")


def test_header_not_utf8_is_corrupt(ckpt):
    rewrite_header(ckpt, None, raw=PREFIX + b'00000000"},"\xff\xfe":1}')
    expect(CheckpointCorruptError, ckpt, match="UTF-8")


def test_header_not_json_is_corrupt(ckpt):
    rewrite_header(ckpt, None, raw=PREFIX + b"00000000 not json")
    expect(CheckpointCorruptError, ckpt, match="JSON")


def test_header_json_array_is_corrupt(ckpt):
    rewrite_header(ckpt, None, raw=b"[1, 2]")
    expect(CheckpointCorruptError, ckpt, match="object")


def test_header_with_duplicate_keys_is_corrupt(ckpt):
    data, n, header = split(ckpt)
    raw = data[8 : 8 + n].rstrip()
    rewrite_header(ckpt, None, raw=raw[:-1] + b',"half":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}')
    expect(CheckpointCorruptError, ckpt, match="duplicate")


def _entry(name, **change):
    def edit(h):
        h[name].update(change)

    return edit


def _delete(name, key):
    def edit(h):
        del h[name][key]

    return edit


STRUCTURE = {
    "shape_not_list": (_entry("half", shape="3"), "shape"),
    "shape_negative": (_entry("half", shape=[-3]), "shape"),
    "shape_bool": (_entry("mask", shape=[True, True]), "shape"),
    "shape_huge_with_zero": (_entry("half", shape=[0, 2**40, 2**40]), "shape"),
    "dtype_unknown": (_entry("half", dtype="F4"), "unknown dtype"),
    "dtype_not_string": (_entry("half", dtype=3), "unknown dtype"),
    "offsets_wrong_length": (_entry("half", data_offsets=[0]), "data_offsets"),
    "offsets_negative": (_entry("half", data_offsets=[-6, 0]), "data_offsets"),
    "offsets_reversed": (_entry("half", data_offsets=[6, 0]), "data_offsets"),
    "offsets_float": (_entry("half", data_offsets=[0.0, 6.0]), "data_offsets"),
    "shape_does_not_match_offsets": (_entry("half", shape=[4]), "needs"),
    "dtype_does_not_match_offsets": (_entry("half", dtype="F32"), "needs"),
    "missing_field": (_delete("half", "shape"), "expected an object"),
    "extra_field": (_entry("half", extra=1), "expected an object"),
    "entry_not_object": (lambda h: h.update(half=[1, 2]), "expected an object"),
    "metadata_not_strings": (lambda h: h["__metadata__"].update({"x": 1}), "string values"),
    "missing_state": (lambda h: h["__metadata__"].pop("ember.state"), "missing"),
    "missing_crc_map": (lambda h: h["__metadata__"].pop("ember.crc32c"), "missing"),
    "crc_map_missing_tensor": (
        lambda h: h["__metadata__"].update({"ember.crc32c": json.dumps({"half": "00000000"})}),
        "ember.crc32c",
    ),
    "crc_not_hex": (
        lambda h: h["__metadata__"].update(
            {"ember.crc32c": json.dumps({k: "XYZ" for k in h if k != "__metadata__"})}
        ),
        "hex",
    ),
    "state_not_json": (lambda h: h["__metadata__"].update({"ember.state": "{nope"}), "ember.state"),
    "format_not_a_number": (lambda h: h["__metadata__"].update({"ember.format": "one"}), "ember.format"),
    "format_zero": (lambda h: h["__metadata__"].update({"ember.format": "0"}), "format version 0"),
}


@pytest.mark.parametrize("case", STRUCTURE)
def test_structurally_invalid_header_is_corrupt_even_with_a_valid_checksum(ckpt, case):
    edit, words = STRUCTURE[case]
    rewrite_header(ckpt, edit)
    expect(CheckpointCorruptError, ckpt, match=words)


def _shift_offsets(by, names):
    def edit(h):
        for name in names:
            b, e = h[name]["data_offsets"]
            h[name]["data_offsets"] = [b + by, e + by]

    return edit


def _last_entry(path):
    _, _, h = split(path)
    return max((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])


def test_overlapping_tensors_are_corrupt(ckpt):
    rewrite_header(ckpt, _shift_offsets(-1, [_last_entry(ckpt)]))
    expect(CheckpointCorruptError, ckpt, match="overlaps")


def test_hole_between_tensors_is_corrupt(ckpt):
    rewrite_header(ckpt, _shift_offsets(1, [_last_entry(ckpt)]))
    expect(CheckpointCorruptError, ckpt, match="hole")


def test_offsets_past_the_end_are_corrupt(ckpt):
    last = _last_entry(ckpt)
    rewrite_header(ckpt, _entry(last, shape=[2**20]))  # shape and offsets consistent, beyond the file
    rewrite_header(ckpt, lambda h: h[last].update(
        data_offsets=[h[last]["data_offsets"][0], h[last]["data_offsets"][0] + 2**20]))
    expect(CheckpointCorruptError, ckpt, match="truncated")


def test_future_format_version_raises_version_error(ckpt):
    rewrite_header(ckpt, lambda h: h["__metadata__"].update({"ember.format": "2"}))
    e = expect(CheckpointVersionError, ckpt)
    assert "format 2" in str(e) and "format 1" in str(e) and "upgrade ember" in str(e)


def test_future_format_version_is_reported_even_if_checksum_differs(ckpt):
    rewrite_header(ckpt, lambda h: h["__metadata__"].update({"ember.format": "7"}), sign=False)
    expect(CheckpointVersionError, ckpt, match="format 7")


def test_future_version_is_reported_by_read_header(ckpt):
    rewrite_header(ckpt, lambda h: h["__metadata__"].update({"ember.format": "2"}))
    expect(CheckpointVersionError, ckpt, container.read_header)


def test_header_edit_without_resigning_is_corrupt(ckpt):
    rewrite_header(ckpt, _entry("mask", shape=[1, 2]), sign=False)
    expect(CheckpointCorruptError, ckpt, match="header checksum")


def test_corrupt_state_tree_is_reported_with_the_path(ckpt):
    rewrite_header(ckpt, lambda h: h["__metadata__"].update({"ember.state": '{"$":"pickle"}'}))
    expect(CheckpointCorruptError, ckpt, reader.load_any, match="unknown node type")


# ----------------------------------------------------------------------------- other files


def test_plain_safetensors_file_loads_as_state_dict_with_a_warning(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"b": torch.zeros(2), "a": torch.ones(3)}, path)
    with pytest.warns(UserWarning, match="no ember checksums"):
        out = reader.load_any(path)
    assert list(out) == ["state_dict"]
    assert torch.equal(out["state_dict"]["a"], torch.ones(3))


def test_plain_safetensors_file_cannot_be_verified(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"a": torch.ones(3)}, path)
    assert container.read_header(path)["kind"] == "safetensors"
    with pytest.raises(CheckpointError, match="no ember checksums"):
        container.verify_file(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_file_loads_weights_only(tmp_path, legacy):
    path = tmp_path / "t.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path, _use_new_zipfile_serialization=not legacy)
    out = reader.load_any(path)
    assert out["epoch"] == 3 and torch.equal(out["state_dict"]["w"], torch.ones(2))


def test_bare_torch_state_dict_is_wrapped_as_state_dict(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    assert set(reader.load_any(path)["state_dict"]) == {"weight", "bias"}


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pickle_that_would_run_code_is_refused(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": _RunsCode(marker)}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError) as e:
        reader.load_any(path)
    assert not marker.exists()
    assert str(path) in str(e.value) and "weights_only=False" in str(e.value) and "save_checkpoint" in str(e.value)


def test_truncated_torch_save_file_is_corrupt(tmp_path):
    path = tmp_path / "t.pt"
    torch.save({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    expect(CheckpointCorruptError, path, reader.load_any)


def test_garbage_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"hello, this is not a checkpoint at all" * 3)
    expect(CheckpointCorruptError, path, reader.load_any, match="not a checkpoint")


def test_empty_file_is_corrupt(tmp_path):
    path = tmp_path / "empty.ckpt"
    path.write_bytes(b"")
    expect(CheckpointCorruptError, path, reader.load_any)


def test_load_foreign_refuses_non_torch_files(ckpt):
    expect(CheckpointCorruptError, ckpt, load_foreign, match="not a checkpoint")


def test_missing_file_raises_checkpoint_error(tmp_path):
    e = expect(CheckpointError, tmp_path / "nope.ckpt", reader.load_any, match="no checkpoint at")
    assert not isinstance(e, CheckpointCorruptError)


def test_directory_raises_checkpoint_error(tmp_path):
    expect(CheckpointError, tmp_path, reader.load_any, match="directory")
    expect(CheckpointError, tmp_path, container.read, match="directory")


def test_spec_example_reader_from_format_md_works(ckpt):
    data = pathlib.Path(ckpt).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__")
    assert crc32c(data[: 8 + P] + b"00000000" + data[16 + P : 8 + n]) == int(meta["ember.header_crc32c"], 16)
    crcs = json.loads(meta["ember.crc32c"])
    for name, e in header.items():
        b, e_ = e["data_offsets"]
        assert crc32c(data[8 + n + b : 8 + n + e_]) == int(crcs[name], 16)


def test_format_md_worked_example_is_the_exact_bytes_ember_writes(monkeypatch):
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "FORMAT.md").read_text()
    example = doc[doc.index("## 8. Worked example") :]
    dump = example[example.index("```\n") + 4 : example.index("\n```", example.index("```\n") + 4)]
    expected = bytes.fromhex("".join(line[10:58] for line in dump.splitlines()))
    monkeypatch.setattr(header, "__version__", "0.1.0")
    buf = io.BytesIO()
    container.write(buf, *codec.flatten({"state_dict": OrderedDict(w=torch.tensor([1.0, 2.0])), "epoch": 1}))
    assert buf.getvalue() == expected
