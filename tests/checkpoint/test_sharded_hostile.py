"""metadata.json is hostile input: a re-signed (valid CRC-32C) metadata whose content lies is refused
before any rank file is read or any tensor allocated."""

from __future__ import annotations

import json

import pytest
import torch

from ember.checkpoint.format.checksums import crc
from ember.checkpoint.sharded import is_sharded_checkpoint, read_full, save_sharded, verify_sharded
from ember.errors import CheckpointCorruptError, CheckpointVersionError


def resign(path, mutate, version: str = "1") -> None:
    obj = json.loads(path.read_text())
    mutate(obj)
    body = {k: v for k, v in obj.items() if k not in ("ember.sharded", "crc32c")}
    head = '{"ember.sharded":"%s","crc32c":"' % version
    raw = bytearray((head + '00000000",' + json.dumps(body, separators=(",", ":"))[1:]).encode())
    raw[len(head):len(head) + 8] = b"%08x" % crc(bytes(raw))
    path.write_bytes(bytes(raw))


def tensor(obj, name):
    return dict(obj["tensors"])[name]


def chunk_outside(obj):
    tensor(obj, "bias")["chunks"][0][1] = [4]


def overlapping_chunks(obj):  # same volume as the tensor, but two chunks cover element 1
    c = tensor(obj, "bias")["chunks"][0]
    tensor(obj, "bias")["chunks"] = [[[0], [2], c[2], "bias@0"], [[1], [1], c[2], "bias@1"]]


def missing_chunk(obj):
    tensor(obj, "bias")["chunks"] = []


def escaping_file_name(obj):
    obj["files"][0][0] = "../../etc/passwd"


def unknown_dtype(obj):
    tensor(obj, "bias")["dtype"] = "qint8"


def dangling_tensor_node(obj):
    obj["tensors"] = [t for t in obj["tensors"] if t[0] != "bias"]


def zero_world(obj):
    obj["world_size"] = 0


def extra_field(obj):
    obj["pickle"] = "cos\nsystem\n"


CASES = {
    "chunk outside": (chunk_outside, r"lies outside the tensor's size \[3\]"),
    "overlap": (overlapping_chunks, "overlap"),
    "missing chunk": (missing_chunk, r"its chunks hold 0 elements, but its size \[3\] has 3"),
    "file name": (escaping_file_name, r"is not a unique \[rank-NNNNN.safetensors, size, sha256\]"),
    "dtype": (unknown_dtype, "unknown dtype 'qint8'"),
    "dangling": (dangling_tensor_node, "references tensor 'bias', which is not in the file"),
    "world size": (zero_world, "world_size must be an int >= 1"),
    "extra field": (extra_field, "must hold exactly the fields"),
}


@pytest.fixture
def saved(tmp_path):
    save_sharded({"weight": torch.ones(3, 4), "bias": torch.arange(3.0), "epoch": 1}, tmp_path / "run.ckpt")
    return tmp_path / "run.ckpt"


@pytest.mark.parametrize("case", list(CASES))
def test_lying_metadata_is_refused(saved, case):
    mutate, message = CASES[case]
    resign(saved / "metadata.json", mutate)
    for attempt in (read_full, verify_sharded):
        with pytest.raises(CheckpointCorruptError, match=message):
            attempt(saved)
    assert not is_sharded_checkpoint(saved)


def test_the_resigning_helper_keeps_a_good_metadata_good(saved):
    resign(saved / "metadata.json", lambda obj: None)
    assert read_full(saved)["epoch"] == 1


def test_a_newer_folder_format_asks_for_an_upgrade(saved):
    resign(saved / "metadata.json", lambda obj: None, version="2")
    with pytest.raises(CheckpointVersionError, match="newer format .* upgrade ember"):
        read_full(saved)


def test_deeply_nested_metadata_is_refused_before_it_is_parsed(saved):
    raw = (saved / "metadata.json").read_bytes()
    bomb = bytearray(raw[:-1] + b',"x":' + b"[" * 600 + b"]" * 600 + b"}")
    bomb[31:39] = b"00000000"
    bomb[31:39] = b"%08x" % crc(bytes(bomb))
    (saved / "metadata.json").write_bytes(bytes(bomb))
    with pytest.raises(CheckpointCorruptError, match="nests '\\[' and '\\{' 60[0-9] deep"):
        read_full(saved)
