"""The JSON header of a ``.ckpt`` file: encode it, parse it, check every field (docs/FORMAT.md, 2 and 7).

The header is untrusted input. Before any JSON is parsed its size, the number of ``[``/``{`` in it
and their nesting are checked against fixed limits, so a hostile header can neither make the parser
build millions of objects nor recurse deeply; then every entry is checked against the real file
size, and an ember header's state tree is checked exactly as loading checks it (``decode.validate``).
"""

from __future__ import annotations

import gc
import json
import re
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, BinaryIO, Iterator

import torch

from ember.checkpoint.format import decode
from ember.checkpoint.format.checksums import crc
from ember.checkpoint.format.entries import Entry, check_entries, corrupt  # noqa: F401 (Entry, corrupt: here too)
from ember.errors import CheckpointCorruptError, CheckpointError, CheckpointVersionError
from ember.version import __version__

FORMAT_VERSION = 1
MAX_HEADER = 100 * 2**20  # bytes; larger headers are refused when writing and corrupt when reading
MAX_CONTAINERS = 2**20  # '[' bytes, and '{' bytes, each, in one header (strings included)
MAX_NESTING = 512  # '[' / '{' open at once, counted over the raw bytes (strings included)
HEADER_PREFIX = b'{"__metadata__":{"ember.header_crc32c":"'
CRC_OFFSET = 8 + len(HEADER_PREFIX)  # file offset of the header checksum's 8 hex digits
PLACEHOLDER = b"00000000"
CRC_RE = re.compile(r"[0-9a-f]{8}")

K_HEADER_CRC = "ember.header_crc32c"
K_FORMAT = "ember.format"
K_VERSION = "ember.version"
K_CRC = "ember.crc32c"
K_STATE = "ember.state"
_REQUIRED = (K_HEADER_CRC, K_FORMAT, K_VERSION, K_CRC, K_STATE)


@dataclass
class Header:
    kind: str  # "ember" or "safetensors" (no ember metadata)
    format_version: int | None
    ember_version: str | None
    tree: Any
    entries: list[Entry]  # in data order
    data_start: int  # file offset of the data section (8 + N)
    file_size: int
    metadata: dict[str, str] = field(default_factory=dict)


def readinto(f: BinaryIO, view: memoryview, label: str, what: str) -> None:
    """Fill ``view`` from ``f``; a short file is corrupt (truncated), a failing read a CheckpointError."""
    got, n = 0, len(view)
    try:
        while got < n:
            k = f.readinto(view[got:])
            if not k:
                raise corrupt(label, f"the file is truncated: {what} needs {n} bytes, only {got} could be read")
            got += k
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {label}: {e.strerror or e}") from None


def loads(text: str) -> Any:
    """json.loads that rejects duplicate keys and NaN/Infinity (raises ValueError)."""

    def pairs(items: list) -> dict:
        out = dict(items)
        if len(out) != len(items):  # rare: find the key named twice
            seen: set = set()
            for k, _ in items:
                if k in seen:
                    raise ValueError(f"duplicate key {k!r:.60}")
                seen.add(k)
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)


def header_crc(prefix: bytes, raw: bytes | bytearray) -> int:
    """CRC-32C of the length prefix + header, with the checksum digits read as '00000000'."""
    n = len(HEADER_PREFIX)
    value = crc(prefix)
    value = crc(raw[:n], value)
    value = crc(PLACEHOLDER, value)
    return crc(memoryview(raw)[n + 8 :], value)


_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_STEP = bytes.maketrans(_BRACKETS, b"\x01\xff\x01\xff")  # '[' '{' -> +1, ']' '}' -> -1 (as int8)


@contextmanager
def parsing() -> Iterator[None]:
    """Pauses the cyclic garbage collector while a header is parsed and checked: parsing builds hundreds of
    thousands of small containers, none in a cycle, and the collector's passes over them cost more than
    the parse itself (2-3x for a metadata of 100k tensors). Reference counting still frees everything."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _depth(brackets: bytes) -> int:
    """The deepest nesting of a string of brackets: a running sum of +1/-1, in C (a tensor's cumsum)."""
    if not brackets:
        return 0
    steps = torch.frombuffer(bytearray(brackets.translate(_STEP)), dtype=torch.int8)
    return int(steps.cumsum(0, dtype=torch.int32).max())


def structure_problem(raw: bytes | bytearray) -> str | None:
    """Why a header of this size and shape is refused before it is parsed, or None.

    Counts raw bytes, strings included, so it bounds the JSON containers of the header and of the
    state tree inside it, and their nesting, at a few C-speed passes over the bytes.
    """
    if len(raw) > MAX_HEADER:
        return f"the header is {len(raw)} bytes, more than the {MAX_HEADER} allowed"
    for pair in ("[]", "{}"):
        count = max(raw.count(pair[0].encode()), raw.count(pair[1].encode()))
        if count > MAX_CONTAINERS:
            return f"the header holds {count} {pair[0]!r} or {pair[1]!r} bytes, more than the {MAX_CONTAINERS} allowed"
    depth = _depth(bytes(raw).translate(None, _NOT_BRACKETS))
    if depth > MAX_NESTING:
        return f"the header nests '[' and '{{' {depth} deep, more than the {MAX_NESTING} allowed"
    return None


# ----------------------------------------------------------------------------- encoding


def encode(tree: Any, entries: list[Entry]) -> bytes:
    """The length prefix and the header (padded, signed) for the tree and the entries in data order."""
    try:
        state = json.dumps(tree, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"the state tree is not JSON-serialisable ({e}); build it with codec.flatten") from None
    meta = {
        K_HEADER_CRC: PLACEHOLDER.decode(),
        K_FORMAT: str(FORMAT_VERSION),
        K_VERSION: __version__,
        K_CRC: json.dumps({e.name: f"{e.crc:08x}" for e in entries}, separators=(",", ":"), ensure_ascii=False),
        K_STATE: state,
    }
    header: dict[str, Any] = {"__metadata__": meta}
    for e in entries:
        header[e.name] = {"dtype": e.code, "shape": list(e.shape), "data_offsets": [e.begin, e.end]}
    raw = bytearray(json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii"))
    raw += b" " * (-len(raw) % 8)
    if len(raw) > MAX_HEADER:
        raise CheckpointError(
            f"the checkpoint header would be {len(raw) / 2**20:.1f} MiB (limit {MAX_HEADER // 2**20} MiB): "
            "the state holds too much non-tensor data; store large arrays as tensors"
        )
    problem = structure_problem(raw)
    if problem:
        raise CheckpointError(
            f"this checkpoint could not be read back: {problem} (docs/FORMAT.md, section 7); "
            "the state holds too many or too deeply nested lists and dicts: store large arrays as tensors"
        )
    assert raw.startswith(HEADER_PREFIX)
    prefix = struct.pack("<Q", len(raw))
    n = len(HEADER_PREFIX)
    raw[n : n + 8] = b"%08x" % header_crc(prefix, raw)
    return prefix + bytes(raw)


# ----------------------------------------------------------------------------- parsing


def _read_raw(f: BinaryIO, size: int, label: str) -> tuple[bytes, bytearray]:
    if size < 8:
        raise corrupt(label, f"the file is {size} bytes long; a checkpoint starts with an 8-byte header length "
                             "(truncated or not a checkpoint)")
    prefix = bytearray(8)
    readinto(f, memoryview(prefix), label, "the header length")
    (n,) = struct.unpack("<Q", prefix)
    if n > size - 8:
        raise corrupt(label, f"the header length field says {n} bytes but only {size - 8} bytes follow it "
                             "(truncated or not a checkpoint)")
    if n > MAX_HEADER:
        raise corrupt(label, f"the header length field says {n} bytes, more than the {MAX_HEADER} allowed")
    if n < 2:
        raise corrupt(label, f"the header length field says {n} bytes; a header is a JSON object")
    raw = bytearray(n)
    readinto(f, memoryview(raw), label, "the header")
    return bytes(prefix), raw


def parse(f: BinaryIO, size: int, label: str, verify: bool) -> Header:
    """Read and check the header of the ``size``-byte file ``f`` (positioned at its start).

    ``verify`` checks the header checksum; every structural check runs regardless.
    """
    prefix, raw = _read_raw(f, size, label)
    problem = structure_problem(raw)
    if problem:
        raise corrupt(label, f"{problem} (docs/FORMAT.md, section 7)")
    with parsing():
        return _parsed(prefix, raw, size, label, verify)


def _parsed(prefix: bytes, raw: bytearray, size: int, label: str, verify: bool) -> Header:
    try:
        obj = loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise corrupt(label, f"the header is not UTF-8 ({e.reason} at byte {8 + e.start})") from None
    except (ValueError, RecursionError) as e:
        raise corrupt(label, f"the header is not valid JSON ({e})") from None
    if type(obj) is not dict:
        raise corrupt(label, f"the header must be a JSON object, it is a {type(obj).__name__}")
    meta = obj.pop("__metadata__", {})
    if type(meta) is not dict or any(type(v) is not str for v in meta.values()):
        raise corrupt(label, "__metadata__ must be an object of string values")
    ember = raw.startswith(HEADER_PREFIX) or any(k.startswith("ember.") for k in meta)
    n = len(raw)
    hdr = Header("ember" if ember else "safetensors", None, None, None, [], 8 + n, size, meta)
    if ember:
        _check_ember_meta(label, hdr, prefix, raw, verify)
    hdr.entries = check_entries(label, obj, size - 8 - n)
    if ember:
        _attach_crcs(label, hdr)
        try:
            decode.validate(hdr.tree, {e.name: (e.dtype, e.shape) for e in hdr.entries})
        except CheckpointCorruptError as e:
            raise corrupt(label, str(e)) from None
    return hdr


def _check_ember_meta(label: str, hdr: Header, prefix: bytes, raw: bytearray, verify: bool) -> None:
    meta = hdr.metadata
    fmt = meta.get(K_FORMAT)
    if fmt is None or not re.fullmatch(r"[0-9]{1,6}", fmt):
        raise corrupt(label, f"metadata {K_FORMAT!r} must be a format number, got {fmt!r:.40}")
    version = int(fmt)
    prefix_ok = crc_ok = True
    if verify:
        stored = meta.get(K_HEADER_CRC)
        n = len(HEADER_PREFIX)
        prefix_ok = (
            raw.startswith(HEADER_PREFIX)
            and type(stored) is str
            and CRC_RE.fullmatch(stored) is not None
            and raw[n : n + 8] == stored.encode("ascii")
        )
        crc_ok = prefix_ok and header_crc(prefix, raw) == int(stored, 16)
    if version > FORMAT_VERSION:
        raise CheckpointVersionError(
            f"{label} is in ember checkpoint format {version}, but this ember ({__version__}) reads format "
            f"{FORMAT_VERSION} only; upgrade ember to load it"
            + ("" if crc_ok else " (its header checksum does not match the format-1 rule either, so it may be corrupt)")
        )
    if version < 1:
        raise corrupt(label, f"format version {version} does not exist (versions start at 1)")
    if not prefix_ok:
        raise corrupt(
            label,
            f"the header does not start with {HEADER_PREFIX.decode()}<8 lowercase hex digits> equal to "
            f"{K_HEADER_CRC}, as an ember header must",
        )
    if not crc_ok:
        raise corrupt(label, "the header checksum does not match: the length prefix or header was altered "
                             "(bit rot or a partial write)")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise corrupt(label, f"ember metadata is missing {', '.join(missing)}")
    hdr.format_version, hdr.ember_version = version, meta[K_VERSION]
    try:
        hdr.tree = loads(meta[K_STATE])
    except (ValueError, RecursionError) as e:
        raise corrupt(label, f"metadata {K_STATE!r} is not valid JSON ({e})") from None


def _attach_crcs(label: str, hdr: Header) -> None:
    try:
        crcs = loads(hdr.metadata[K_CRC])
    except (ValueError, RecursionError) as e:
        raise corrupt(label, f"metadata {K_CRC!r} is not valid JSON ({e})") from None
    names = {e.name for e in hdr.entries}
    if type(crcs) is not dict or set(crcs) != names:
        raise corrupt(label, f"metadata {K_CRC!r} must map exactly the file's tensor names to checksums")
    values = list(map(crcs.__getitem__, map(attrgetter("name"), hdr.entries)))
    if set(map(type, values)) <= {str} and all(map(CRC_RE.fullmatch, values)):  # all of them at once
        for e, v in zip(hdr.entries, values):
            e.crc = int(v, 16)
        return
    for e in hdr.entries:
        v = crcs[e.name]
        if type(v) is not str or not CRC_RE.fullmatch(v):
            raise corrupt(label, f"tensor {e.name!r}: checksum {v!r:.40} is not 8 lowercase hex digits")
        e.crc = int(v, 16)
