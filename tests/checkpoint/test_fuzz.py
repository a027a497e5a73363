"""Fuzzing: well over 1000 damaged copies of a small valid checkpoint must each raise a
CheckpointError subclass (never another exception, never a load with different values).
Seeded, so every run tests the same files."""

import io
import json
import random
import struct
from collections import OrderedDict

import torch

from ember.checkpoint.format import codec, container
from ember.checkpoint import reader
from ember.errors import CheckpointCorruptError, CheckpointError

SEED = 20240611


def small_checkpoint() -> bytes:
    g = torch.Generator().manual_seed(0)
    state = {
        "state_dict": OrderedDict(
            [("l.weight", torch.randn(3, 2, generator=g)), ("l.bias", torch.randn(3, generator=g))]
        ),
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
        "epoch": 1,
        "global_step": 12,
        "flags": torch.tensor([True, False, True]),
        "ids": torch.arange(4, dtype=torch.int64),
        "h": torch.ones(2, dtype=torch.bfloat16),
        "hyper_parameters": {"name": "tiny", "betas": (0.9, 0.999)},
    }
    buf = io.BytesIO()
    container.write(buf, *codec.flatten(state))
    return buf.getvalue()


def header_of(data: bytes):
    n = struct.unpack("<Q", data[:8])[0]
    return n, json.loads(data[8 : 8 + n])


def rebuild(header: dict, data: bytes, n: int) -> bytes:
    """The file with a different header, a consistent length prefix, the *old* (now stale) checksum."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def json_edit(rng: random.Random, data: bytes) -> bytes:
    n, header = header_of(data)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    meta = header["__metadata__"]
    kind = rng.randrange(10)
    if kind == 0:
        entry["data_offsets"][rng.randrange(2)] += rng.choice([-8, -1, 1, 2, 4, 8, 1000])
    elif kind == 1:
        entry["shape"] = rng.choice([[], [1], [2, 3], [3, 2], [0], [10**6]])
    elif kind == 2:
        entry["dtype"] = rng.choice(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "XX"])
    elif kind == 3:
        del entry[rng.choice(list(entry))]
    elif kind == 4:
        del meta[rng.choice(list(meta))]
    elif kind == 5:
        crcs = json.loads(meta["ember.crc32c"])
        crcs[name] = "%08x" % rng.getrandbits(32)
        meta["ember.crc32c"] = json.dumps(crcs)
    elif kind == 6:
        meta["ember.format"] = rng.choice(["0", "2", "10", "x", ""])
    elif kind == 7:  # swap two tensors' byte ranges
        other = rng.choice(names)
        entry["data_offsets"], header[other]["data_offsets"] = header[other]["data_offsets"], entry["data_offsets"]
    elif kind == 8:  # change the state tree (e.g. epoch) without re-signing
        meta["ember.state"] = meta["ember.state"].replace('"epoch",1', '"epoch",2')
    else:
        header[name + "x"] = header.pop(name)
    return rebuild(header, data, n)


def mutants(data: bytes, rng: random.Random):
    size = len(data)
    n = struct.unpack("<Q", data[:8])[0]
    for _ in range(250):  # truncation at any length
        yield "truncate", data[: rng.randrange(size)]
    for _ in range(350):  # one bit flipped anywhere
        b = bytearray(data)
        b[rng.randrange(size)] ^= 1 << rng.randrange(8)
        yield "flip1", bytes(b)
    for _ in range(150):  # one bit flipped in the tensor data
        b = bytearray(data)
        b[rng.randrange(8 + n, size)] ^= 1 << rng.randrange(8)
        yield "flip-data", bytes(b)
    for _ in range(200):  # 2..16 bits flipped
        b = bytearray(data)
        for pos in rng.sample(range(size * 8), rng.randint(2, 16)):
            b[pos // 8] ^= 1 << (pos % 8)
        yield "flipN", bytes(b)
    for _ in range(200):  # JSON-level header edits, stale checksum
        yield "json", json_edit(rng, data)
    for _ in range(100):  # length prefix changed
        new = rng.choice([0, 1, 7, n - 8, n - 1, n + 1, n + 8, size, 2**64 - 1,
                          rng.getrandbits(64), rng.getrandbits(16)])
        yield "prefix", struct.pack("<Q", new % 2**64) + data[8:]
    for _ in range(100):  # a random range overwritten with random bytes
        a = rng.randrange(size)
        k = rng.randint(1, 64)
        yield "overwrite", data[:a] + rng.randbytes(k) + data[a + k :]
    for _ in range(50):  # random files
        yield "random", rng.randbytes(rng.randrange(0, 600))
    for _ in range(50):  # bytes appended
        yield "append", data + rng.randbytes(rng.randint(1, 40))


def test_every_damaged_file_raises_a_checkpoint_error(tmp_path):
    data = small_checkpoint()
    path = tmp_path / "m.ckpt"
    path.write_bytes(data)
    reader.load_any(path)  # the original loads
    rng = random.Random(SEED)
    tested = 0
    for kind, mutant in mutants(data, rng):
        if mutant == data:
            continue
        path.write_bytes(mutant)
        try:
            reader.load_any(path)
        except CheckpointError:
            tested += 1
            continue
        raise AssertionError(f"a damaged file ({kind}) loaded without error")
    assert tested >= 1000


def test_damaged_files_fail_header_only_reads_and_verify_file(tmp_path):
    data = small_checkpoint()
    path = tmp_path / "m.ckpt"
    rng = random.Random(SEED + 1)
    for kind, mutant in list(mutants(data, rng))[::4]:
        if mutant == data:
            continue
        path.write_bytes(mutant)
        try:
            container.verify_file(path)
        except CheckpointError:
            pass
        else:
            raise AssertionError(f"verify_file accepted a damaged file ({kind})")
        try:
            container.read_header(path)
        except CheckpointError:
            continue
        # only the header is checked: a file that passes it has the original header and size
        n = struct.unpack("<Q", data[:8])[0]
        assert len(mutant) == len(data) and mutant[: 8 + n] == data[: 8 + n], (
            f"read_header accepted a damaged header ({kind})")


def _mutate_tree(rng: random.Random, node):
    """Replace one random node of a JSON tree with a random JSON value."""
    junk = [None, True, 0, -1, 1.5, "x", "$", [], {}, {"$": "tensor"}, {"$": "dict", "items": 3}, [[1]], 2**70,
            {"$": "tensor", "name": "ids", "dtype": "complex128", "shape": [2]},
            {"$": "tensor", "name": "h", "dtype": "complex32", "shape": [1]},
            {"$": "tensor", "name": "ids", "dtype": ["int64"], "shape": [4]},
            {"$": "ndarray", "dtype": "<i8", "tensor": {"$": "tensor", "name": "ids"}}]
    if isinstance(node, list) and node and rng.random() < 0.7:
        i = rng.randrange(len(node))
        node[i] = _mutate_tree(rng, node[i])
        return node
    if isinstance(node, dict) and node and rng.random() < 0.7:
        k = rng.choice(list(node))
        if rng.random() < 0.1:
            del node[k]
        else:
            node[k] = _mutate_tree(rng, node[k])
        return node
    return rng.choice(junk)


def test_mutated_state_trees_raise_only_corrupt_errors():
    data = small_checkpoint()
    _, header = header_of(data)
    tree_text = header["__metadata__"]["ember.state"]
    tensors = {k: torch.zeros(1) for k in header if k != "__metadata__"}
    rng = random.Random(SEED + 2)
    for _ in range(600):
        tree = json.loads(tree_text)
        for _ in range(rng.randint(1, 3)):
            tree = _mutate_tree(rng, tree)
        try:
            out = codec.unflatten(tree, tensors)
        except CheckpointCorruptError:
            continue
        assert isinstance(out, dict)  # a different but well-formed tree decodes to a dict


def test_validating_a_mutated_tree_agrees_with_decoding_it():
    """verify (which validates the tree against the tensors' dtypes and shapes) refuses exactly the
    trees that loading refuses."""
    data = small_checkpoint()
    _, header = header_of(data)
    tree_text = header["__metadata__"]["ember.state"]
    _, tensors = container.read_stream(io.BytesIO(data), len(data), "fuzz")
    specs = {k: (t.dtype, tuple(t.shape)) for k, t in tensors.items()}
    rng = random.Random(SEED + 3)
    for _ in range(600):
        tree = json.loads(tree_text)
        for _ in range(rng.randint(1, 3)):
            tree = _mutate_tree(rng, tree)
        outcomes = []
        for check in (lambda: codec.validate(tree, specs), lambda: codec.unflatten(tree, tensors)):
            try:
                check()
                outcomes.append("ok")
            except CheckpointCorruptError:
                outcomes.append("corrupt")
        assert outcomes[0] == outcomes[1], (outcomes, tree)


# ----------------------------------------------------------------------------- sharded metadata


def _leaves(node, path=()):
    """Every (path, value) of a JSON tree whose value is not a container."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, path + (i,))
    else:
        yield path, node


_ODD_VALUES = [0, -1, 1, 2**40, 2**63, 3.5, "", "x", "rank-00000.safetensors", "bias@0", None, True, [], {}, [0],
               "f" * 64]


def test_mutated_sharded_metadata_raises_only_checkpoint_errors(tmp_path):
    """Each field of a (re-signed, so the checksum passes) metadata.json replaced by an odd value: every
    reader either reads the folder or raises a CheckpointError; never another exception."""
    from ember.checkpoint.sharded import read_full, save_sharded, verify_sharded
    from test_sharded_hostile import resign

    folder = tmp_path / "run.ckpt"
    save_sharded({"weight": torch.ones(3, 4), "bias": torch.arange(3.0), "epoch": 1}, folder)
    pristine = (folder / "metadata.json").read_bytes()
    leaves = [p for p, _ in _leaves(json.loads(pristine)) if p[0] not in ("ember.sharded", "crc32c")]
    rng = random.Random(SEED)
    for _ in range(120):
        path, value = rng.choice(leaves), rng.choice(_ODD_VALUES)

        def mutate(obj, path=path, value=value):
            node = obj
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
        (folder / "metadata.json").write_bytes(pristine)
        resign(folder / "metadata.json", mutate)
        for reader_ in (read_full, verify_sharded):
            try:
                reader_(folder)
            except CheckpointError:
                pass
