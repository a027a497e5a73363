"""The ``.ckpt`` container: a valid safetensors file whose ``__metadata__`` carries ember's
state tree and a CRC-32C of every byte. Specified in docs/FORMAT.md.

Layout: u64 little-endian header length N | N bytes of JSON header (space-padded so that
8 + N is a multiple of 8) | tensor bytes, back to back, ordered by element size (largest
first) then name, so every tensor starts at a multiple of its element size.

Checks: a CRC-32C per tensor over its bytes, and a CRC-32C over the length prefix
and the header with the header checksum's 8 hex digits replaced by ``00000000``. Nothing
in a file is executed and every size is checked against the real file size before
anything is allocated.
"""

from __future__ import annotations

import ctypes
import json
import math
import mmap as _mmap
import os
import re
import stat
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Mapping

import torch
from crc32c import crc32c as _crc  # CRC-32C (Castagnoli): SSE4.2/ARMv8 instructions, releases the GIL

from ember.errors import CheckpointCorruptError, CheckpointError, CheckpointVersionError

__all__ = [
    "FORMAT_VERSION",
    "STORABLE_DTYPES",
    "write",
    "read",
    "read_header",
    "verify_file",
    "is_ember_file",
]

FORMAT_VERSION = 1
MAX_HEADER = 100 * 2**20  # bytes; larger headers are refused when writing and corrupt when reading
CHUNK = 64 * 2**20  # largest piece copied off an accelerator / handed to write() at once
HEADER_PREFIX = b'{"__metadata__":{"ember.header_crc32c":"'
CRC_OFFSET = 8 + len(HEADER_PREFIX)  # file offset of the header checksum's 8 hex digits
_PLACEHOLDER = b"00000000"
_CRC_RE = re.compile(r"[0-9a-f]{8}")

K_HEADER_CRC = "ember.header_crc32c"
K_FORMAT = "ember.format"
K_VERSION = "ember.version"
K_CRC = "ember.crc32c"
K_STATE = "ember.state"
_REQUIRED = (K_HEADER_CRC, K_FORMAT, K_VERSION, K_CRC, K_STATE)

# safetensors dtype code -> torch dtype name (only those this torch has are used)
_CODE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool", "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu",
}  # fmt: skip
DTYPES: dict[str, torch.dtype] = {
    c: getattr(torch, n) for c, n in _CODE_NAMES.items() if isinstance(getattr(torch, n, None), torch.dtype)
}
CODES: dict[torch.dtype, str] = {d: c for c, d in DTYPES.items()}
STORABLE_DTYPES = frozenset(CODES)


@dataclass
class _Entry:
    name: str
    code: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # relative to the start of the data section
    end: int
    crc: int | None = None


@dataclass
class _Header:
    kind: str  # "ember" or "safetensors" (no ember metadata)
    format_version: int | None
    ember_version: str | None
    tree: Any
    entries: list[_Entry]  # in data order
    data_start: int  # file offset of the data section (8 + N)
    file_size: int
    metadata: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers


def _corrupt(path: Any, msg: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"corrupt checkpoint {path}: {msg}")


def _ember_version() -> str:
    try:
        from ember import __version__

        return str(__version__)
    except Exception:
        return "0+unknown"


def _open(path: Any) -> BinaryIO:
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise CheckpointError(f"no checkpoint at {path}: it is a directory; pass the checkpoint file inside it")
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"no checkpoint at {path}: it is not a regular file")
        return open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}: the file does not exist") from None
    except OSError as e:
        raise CheckpointError(f"cannot open checkpoint {path}: {e.strerror or e}") from None


def _readinto(f: BinaryIO, view: memoryview, path: Any, what: str) -> None:
    got, n = 0, len(view)
    try:
        while got < n:
            k = f.readinto(view[got:])
            if not k:
                raise _corrupt(path, f"the file is truncated: {what} needs {n} bytes, only {got} could be read")
            got += k
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None


def _loads(text: str) -> Any:
    """json.loads that rejects duplicate keys and NaN/Infinity (raises ValueError)."""

    def pairs(items: list) -> dict:
        out: dict = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate key {k!r:.60}")
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)


def _header_crc(prefix: bytes, raw: bytes | bytearray) -> int:
    """CRC-32C of the length prefix + header, with the checksum digits read as '00000000'."""
    n = len(HEADER_PREFIX)
    crc = _crc(prefix)
    crc = _crc(raw[:n], crc)
    crc = _crc(_PLACEHOLDER, crc)
    return _crc(memoryview(raw)[n + 8 :], crc)


# ----------------------------------------------------------------------------- CRC-32C, in parallel

_PIECE = 16 * 2**20
_SHIFT_OPS: list[list[int]] = []  # _SHIFT_OPS[k]: 32 columns of "append 2**k zero bytes" as a GF(2) matrix


def _apply(op: list[int], v: int) -> int:
    out, j = 0, 0
    while v:
        if v & 1:
            out ^= op[j]
        v >>= 1
        j += 1
    return out


def _shift(crc: int, nbytes: int) -> int:
    """The CRC-32 register after ``nbytes`` more zero bytes, minus the CRC of those zeros (linear in crc)."""
    if not _SHIFT_OPS:
        zero = _crc(b"\0")
        _SHIFT_OPS.append([_crc(b"\0", 1 << j) ^ zero for j in range(32)])
    k = 0
    while nbytes:
        while len(_SHIFT_OPS) <= k:
            last = _SHIFT_OPS[-1]
            _SHIFT_OPS.append([_apply(last, col) for col in last])
        if nbytes & 1:
            crc = _apply(_SHIFT_OPS[k], crc)
        nbytes >>= 1
        k += 1
    return crc


def crc32_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """CRC of A+B from CRC(A), CRC(B) and len(B) (CRC-32C here; the method works for any CRC-32)."""
    return _shift(crc_a, len_b) ^ crc_b


def _crc32_many(views: list[memoryview]) -> list[int]:
    """CRC-32C of each buffer; big ones are cut into pieces checked in parallel (the CRC releases the GIL)."""
    workers = min(os.cpu_count() or 1, 16)
    if workers < 2 or sum(len(v) for v in views) < 4 * _PIECE:
        return [_crc(v) for v in views]
    jobs = [(i, v[s : s + _PIECE]) for i, v in enumerate(views) for s in range(0, len(v), _PIECE)]
    with ThreadPoolExecutor(workers) as pool:
        crcs = list(pool.map(lambda job: _crc(job[1]), jobs))
    out = [0] * len(views)
    for (i, piece), crc in zip(jobs, crcs):
        out[i] = crc32_combine(out[i], crc, len(piece))
    return out


# ----------------------------------------------------------------------------- writing


def _cpu_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a CPU tensor, without a copy when it is contiguous (no numpy needed).

    The view keeps the tensor alive.
    """
    t = t.contiguous()
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    raw = (ctypes.c_ubyte * n).from_address(t.data_ptr())
    raw._tensor = t  # type: ignore[attr-defined]  # keep the memory alive as long as the view
    return memoryview(raw).cast("B")


def _chunks(t: torch.Tensor):
    """Yield the tensor's bytes as memoryviews of at most CHUNK bytes (copied to CPU chunk by chunk)."""
    if t.numel() == 0:
        return
    if t.device.type == "cpu":
        mv = _cpu_bytes(t)
        for s in range(0, len(mv), CHUNK):
            yield mv[s : s + CHUNK]
        return
    flat = t.contiguous().reshape(-1).view(torch.uint8)
    n = flat.numel()
    try:
        host = torch.empty(min(n, CHUNK), dtype=torch.uint8, pin_memory=t.device.type == "cuda")
    except RuntimeError:
        host = torch.empty(min(n, CHUNK), dtype=torch.uint8)
    hv = _cpu_bytes(host)
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        host[:m].copy_(flat[s : s + m])
        yield hv[:m]


def _plan(tensors: Mapping[str, torch.Tensor]) -> list[tuple[_Entry, torch.Tensor]]:
    plan = []
    for name, t in tensors.items():
        if type(name) is not str or name == "__metadata__":
            raise CheckpointError(f"tensor name {name!r} cannot be stored: names are strings other than '__metadata__'")
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.is_meta or t.is_quantized:
            raise CheckpointError(f"{name}: {type(t).__name__} is not a dense tensor with data; flatten the state with codec.flatten first")
        if t.dtype not in CODES:
            raise CheckpointError(f"{name}: dtype {t.dtype} has no safetensors code; flatten the state with codec.flatten first")
        t = t.detach().resolve_conj().resolve_neg()
        plan.append((_Entry(name, CODES[t.dtype], t.dtype, tuple(t.shape), 0, t.numel() * t.element_size()), t))
    plan.sort(key=lambda p: (-p[0].dtype.itemsize, p[0].name))
    pos = 0
    for e, _ in plan:
        e.begin, e.end, pos = pos, pos + e.end, pos + e.end
    return plan


def _compute_crcs(plan: list[tuple[_Entry, torch.Tensor]]) -> None:
    direct = [(e, t) for e, t in plan if t.device.type == "cpu" and t.is_contiguous()]
    for e, crc in zip((e for e, _ in direct), _crc32_many([_cpu_bytes(t) for _, t in direct])):
        e.crc = crc
    for e, t in plan:
        if e.crc is None:
            crc = 0
            for chunk in _chunks(t):
                crc = _crc(chunk, crc)
            e.crc = crc


def _encode_header(tree: Any, entries: list[_Entry]) -> bytes:
    try:
        state = json.dumps(tree, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"the state tree is not JSON-serialisable ({e}); build it with codec.flatten") from None
    meta = {
        K_HEADER_CRC: _PLACEHOLDER.decode(),
        K_FORMAT: str(FORMAT_VERSION),
        K_VERSION: _ember_version(),
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
    assert raw.startswith(HEADER_PREFIX)
    prefix = struct.pack("<Q", len(raw))
    n = len(HEADER_PREFIX)
    raw[n : n + 8] = b"%08x" % _header_crc(prefix, raw)
    return prefix + bytes(raw)


def write(fileobj: BinaryIO, tree: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """Stream a checkpoint (the codec tree + named tensors) to any object with ``.write()``.

    To a seekable file of CPU tensors: the header goes first with zero checksums (same length),
    the tensors follow while a second thread checksums each piece just written, then the header
    is written again in place with the real checksums — so checksumming overlaps the write.
    Otherwise checksums are computed in a first pass, then everything is written once.
    Nothing is written if the input is invalid.
    """
    plan = _plan(tensors)
    if _seekable(fileobj) and all(t.device.type == "cpu" for _, t in plan):
        _write_overlapped(fileobj, tree, plan)
        return
    _compute_crcs(plan)
    fileobj.write(_encode_header(tree, [e for e, _ in plan]))
    for _, t in plan:
        for chunk in _chunks(t):
            fileobj.write(chunk)


def _seekable(f: Any) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _write_overlapped(fileobj: BinaryIO, tree: Any, plan: list[tuple[_Entry, torch.Tensor]]) -> None:
    entries = [e for e, _ in plan]
    for e in entries:
        e.crc = 0
    header = _encode_header(tree, entries)  # validates the tree before any byte is written
    start = fileobj.tell()
    fileobj.write(header)

    def crc_piece(e: _Entry, piece: memoryview) -> None:
        e.crc = _crc(piece, e.crc)  # one worker: pieces of a tensor are checksummed in order

    with ThreadPoolExecutor(1) as pool:
        pending = []
        for e, t in plan:
            for chunk in _chunks(t):  # CPU tensors: views of the tensor's own memory, stable while we write
                pending.append(pool.submit(crc_piece, e, chunk))
                fileobj.write(chunk)
        for f in pending:
            f.result()
    end = fileobj.tell()
    final = _encode_header(tree, entries)
    if len(final) != len(header):  # fixed-width checksums keep the length; never write a shifted header
        raise CheckpointError("internal error: the header changed length when its checksums were filled in")
    fileobj.seek(start)
    fileobj.write(final)
    fileobj.seek(end)


# ----------------------------------------------------------------------------- reading


def _parse(path: Any, f: BinaryIO, size: int, verify: bool) -> _Header:
    if size < 8:
        raise _corrupt(path, f"the file is {size} bytes long; a checkpoint starts with an 8-byte header length (truncated or not a checkpoint)")
    prefix = bytearray(8)
    _readinto(f, memoryview(prefix), path, "the header length")
    (n,) = struct.unpack("<Q", prefix)
    if n > size - 8:
        raise _corrupt(path, f"the header length field says {n} bytes but only {size - 8} bytes follow it (truncated or not a checkpoint)")
    if n > MAX_HEADER:
        raise _corrupt(path, f"the header length field says {n} bytes, more than the {MAX_HEADER} allowed")
    if n < 2:
        raise _corrupt(path, f"the header length field says {n} bytes; a header is a JSON object")
    raw = bytearray(n)
    _readinto(f, memoryview(raw), path, "the header")
    try:
        obj = _loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _corrupt(path, f"the header is not UTF-8 ({e.reason} at byte {8 + e.start})") from None
    except (ValueError, RecursionError) as e:
        raise _corrupt(path, f"the header is not valid JSON ({e})") from None
    if type(obj) is not dict:
        raise _corrupt(path, f"the header must be a JSON object, it is a {type(obj).__name__}")
    meta = obj.pop("__metadata__", {})
    if type(meta) is not dict or any(type(v) is not str for v in meta.values()):
        raise _corrupt(path, "__metadata__ must be an object of string values")
    ember = raw.startswith(HEADER_PREFIX) or any(k.startswith("ember.") for k in meta)
    hdr = _Header("ember" if ember else "safetensors", None, None, None, [], 8 + n, size, meta)
    if ember:
        _check_ember_meta(path, hdr, bytes(prefix), raw, verify)
    hdr.entries = _check_entries(path, obj, size - 8 - n)
    if ember:
        _attach_crcs(path, hdr)
    return hdr


def _check_ember_meta(path: Any, hdr: _Header, prefix: bytes, raw: bytearray, verify: bool) -> None:
    meta = hdr.metadata
    fmt = meta.get(K_FORMAT)
    if fmt is None or not re.fullmatch(r"[0-9]{1,6}", fmt):
        raise _corrupt(path, f"metadata {K_FORMAT!r} must be a format number, got {fmt!r:.40}")
    version = int(fmt)
    prefix_ok = crc_ok = True
    if verify:
        stored = meta.get(K_HEADER_CRC)
        n = len(HEADER_PREFIX)
        prefix_ok = (
            raw.startswith(HEADER_PREFIX)
            and type(stored) is str
            and _CRC_RE.fullmatch(stored) is not None
            and raw[n : n + 8] == stored.encode("ascii")
        )
        crc_ok = prefix_ok and _header_crc(prefix, raw) == int(stored, 16)
    if version > FORMAT_VERSION:
        raise CheckpointVersionError(
            f"{path} is in ember checkpoint format {version}, but this ember ({_ember_version()}) reads format "
            f"{FORMAT_VERSION} only; upgrade ember to load it"
            + ("" if crc_ok else " (its header checksum does not match the format-1 rule either, so it may be corrupt)")
        )
    if version < 1:
        raise _corrupt(path, f"format version {version} does not exist (versions start at 1)")
    if not prefix_ok:
        raise _corrupt(
            path,
            f"the header does not start with {HEADER_PREFIX.decode()}<8 lowercase hex digits> equal to "
            f"{K_HEADER_CRC}, as an ember header must",
        )
    if not crc_ok:
        raise _corrupt(path, "the header checksum does not match: the length prefix or header was altered (bit rot or a partial write)")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise _corrupt(path, f"ember metadata is missing {', '.join(missing)}")
    hdr.format_version, hdr.ember_version = version, meta[K_VERSION]
    try:
        hdr.tree = _loads(meta[K_STATE])
    except (ValueError, RecursionError) as e:
        raise _corrupt(path, f"metadata {K_STATE!r} is not valid JSON ({e})") from None


def _int_list(v: Any, n: int | None) -> bool:
    return type(v) is list and (n is None or len(v) == n) and all(type(x) is int and 0 <= x < 2**63 for x in v)


def _check_entries(path: Any, obj: dict, data_len: int) -> list[_Entry]:
    entries = []
    for name, e in obj.items():
        if type(e) is not dict or set(e) != {"dtype", "shape", "data_offsets"}:
            got = sorted(e) if type(e) is dict else type(e).__name__
            raise _corrupt(path, f"tensor {name!r}: expected an object with dtype, shape and data_offsets, got {got}")
        code, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        dtype = DTYPES.get(code) if type(code) is str else None
        if dtype is None:
            raise _corrupt(path, f"tensor {name!r} has unknown dtype {code!r:.40} (this ember reads {', '.join(DTYPES)})")
        if not _int_list(shape, None) or len(shape) > 64 or math.prod(max(d, 1) for d in shape) >= 2**62:
            raise _corrupt(path, f"tensor {name!r}: shape must be a list of at most 64 non-negative ints, got {shape!r:.80}")
        if not _int_list(offsets, 2) or offsets[0] > offsets[1]:
            raise _corrupt(path, f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end, got {offsets!r:.80}")
        nbytes = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise _corrupt(path, f"tensor {name!r}: shape {shape} of {code} needs {nbytes} bytes but data_offsets {offsets} span {offsets[1] - offsets[0]}")
        entries.append(_Entry(name, code, dtype, tuple(shape), offsets[0], offsets[1]))
    entries.sort(key=lambda x: (x.begin, x.end))
    pos = 0
    for x in entries:
        if x.begin != pos:
            what = "leaves a hole before it" if x.begin > pos else "overlaps the previous tensor"
            raise _corrupt(path, f"tensor {x.name!r} starts at data byte {x.begin} but the previous one ends at {pos}: it {what}")
        pos = x.end
    if pos > data_len:
        raise _corrupt(path, f"the file is truncated: the tensors need {pos} bytes of data but only {data_len} follow the header")
    if pos < data_len:
        raise _corrupt(path, f"{data_len - pos} unexpected bytes after the last tensor (the file was appended to or its header is wrong)")
    return entries


def _attach_crcs(path: Any, hdr: _Header) -> None:
    try:
        crcs = _loads(hdr.metadata[K_CRC])
    except (ValueError, RecursionError) as e:
        raise _corrupt(path, f"metadata {K_CRC!r} is not valid JSON ({e})") from None
    names = {e.name for e in hdr.entries}
    if type(crcs) is not dict or set(crcs) != names:
        raise _corrupt(path, f"metadata {K_CRC!r} must map exactly the file's tensor names to checksums")
    for e in hdr.entries:
        v = crcs[e.name]
        if type(v) is not str or not _CRC_RE.fullmatch(v):
            raise _corrupt(path, f"tensor {e.name!r}: checksum {v!r:.40} is not 8 lowercase hex digits")
        e.crc = int(v, 16)


def _crc_error(path: Any, hdr: _Header, e: _Entry, got: int) -> CheckpointCorruptError:
    a, b = hdr.data_start + e.begin, hdr.data_start + e.end
    return _corrupt(
        path,
        f"tensor {e.name!r} (file bytes {a}..{b}) fails its CRC-32C check (stored {e.crc:08x}, computed {got:08x}): "
        "its data was damaged (bit rot, a partial copy); use another checkpoint",
    )


def _plain_tree(hdr: _Header, path: Any) -> Any:
    from ember.checkpoint import codec  # codec imports this module

    warnings.warn(
        f"{path} is a plain safetensors file, not an ember checkpoint: its {len(hdr.entries)} tensors are "
        "loaded as {'state_dict': {name: tensor}}; it has no ember checksums, so its bytes were not verified",
        UserWarning,
        stacklevel=3,
    )
    return codec.weights_tree([e.name for e in sorted(hdr.entries, key=lambda e: e.name)])


def _device(map_location: Any) -> torch.device | None:
    if map_location is None:
        return None
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(f"map_location must be None, a str or a torch.device, got {type(map_location).__name__}")
    dev = torch.device(map_location)
    return None if dev.type == "cpu" else dev


def read(path: Any, *, map_location: Any = None, verify: bool = True, mmap: bool = False) -> tuple[Any, dict[str, torch.Tensor]]:
    """Read a checkpoint: ``(tree, {name: tensor})``; pass them to ``codec.unflatten``.

    The header (structure and checksum) is always checked. ``verify=True`` also checks the
    CRC-32C of every tensor, which reads every byte even with ``mmap=True``; use
    ``mmap=True, verify=False`` for a lazy load whose tensor bytes are paged in on use.
    Without mmap each tensor is allocated (sizes come from a header already checked against
    the real file size) and filled with ``readinto``; a second thread checksums each piece as
    soon as it is read. Tensors are created on the CPU, then moved to ``map_location``.
    A plain safetensors file loads as ``{"state_dict": ...}`` with a warning.
    """
    device = _device(map_location)
    with _open(path) as f:
        size = os.fstat(f.fileno()).st_size
        hdr = _parse(path, f, size, verify=True)
        if mmap and size:
            tensors = _map_tensors(path, f, size, hdr, verify)
        else:
            f.seek(hdr.data_start)
            tensors = _read_tensors(f, hdr, path, verify and hdr.kind == "ember")
    if device is not None:
        tensors = {k: t.to(device) for k, t in tensors.items()}
    tree = hdr.tree if hdr.kind == "ember" else _plain_tree(hdr, path)
    return tree, tensors


def _map_tensors(path: Any, f: BinaryIO, size: int, hdr: _Header, verify: bool) -> dict[str, torch.Tensor]:
    try:
        buf: Any = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_COPY)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot map checkpoint {path}: {e}") from None
    if len(buf) != size:
        raise _corrupt(path, "the file changed size while it was being read")
    base, view = hdr.data_start, memoryview(buf)
    if verify and hdr.kind == "ember":
        got = _crc32_many([view[base + e.begin : base + e.end] for e in hdr.entries])
        for e, crc in zip(hdr.entries, got):
            if crc != e.crc:
                raise _crc_error(path, hdr, e, crc)
    tensors = {}
    for e in hdr.entries:
        if e.end == e.begin:
            t = torch.empty(e.shape, dtype=e.dtype)
        else:
            t = torch.frombuffer(buf, dtype=e.dtype, count=(e.end - e.begin) // e.dtype.itemsize, offset=base + e.begin)
            if t.data_ptr() % e.dtype.itemsize:
                t = t.clone()  # a misaligned tensor (only in foreign safetensors files)
            t = t.view(e.shape)
        tensors[e.name] = t
    return tensors


_READ_PIECE = 8 * 2**20


def _read_tensors(f: BinaryIO, hdr: _Header, path: Any, checked: bool) -> dict[str, torch.Tensor]:
    """Read every tensor, in data order, into its own allocation. When ``checked``, a second thread
    checksums each piece as soon as it has been read; once reading is done this thread checksums the
    pieces not yet started (from the back), and the pieces' CRCs are combined per tensor."""
    from ember.checkpoint.progress import ReadProgress

    tensors: dict[str, torch.Tensor] = {}
    pieces: list[tuple[str, memoryview]] = []
    futures = []
    reader = ReadProgress(f, hdr.file_size - hdr.data_start, f"loading {os.path.basename(str(path))}")
    try:
        with ThreadPoolExecutor(1) as pool:
            for e in hdr.entries:  # in data order, covering the data section without holes
                t = torch.empty(e.shape, dtype=e.dtype)
                view = _cpu_bytes(t)
                for s in range(0, len(view), _READ_PIECE):
                    piece = view[s : s + _READ_PIECE]
                    _readinto(reader, piece, path, f"tensor {e.name!r}")
                    if checked:
                        pieces.append((e.name, piece))
                        futures.append(pool.submit(_crc, piece))
                tensors[e.name] = t
            piece_crcs = [0] * len(pieces)
            for i in reversed(range(len(pieces))):
                piece_crcs[i] = _crc(pieces[i][1]) if futures[i].cancel() else futures[i].result()
    finally:
        reader.close()
    if checked:
        crcs = {e.name: 0 for e in hdr.entries}
        for (name, piece), crc in zip(pieces, piece_crcs):
            crcs[name] = crc32_combine(crcs[name], crc, len(piece))
        for e in hdr.entries:
            if crcs[e.name] != e.crc:
                raise _crc_error(path, hdr, e, crcs[e.name])
    return tensors


def read_header(path: Any, *, verify: bool = True) -> dict:
    """Parse and check the header only (cheap). ``verify`` checks the header checksum.

    Returns ``kind`` ("ember" or "safetensors"), ``format_version``, ``ember_version``,
    ``tree`` (the codec tree, tensors unresolved), ``tensors`` (name -> dtype, dtype_code,
    shape, nbytes, in data order), ``checksummed``, ``file_size``, ``header_size``, ``metadata``.
    """
    with _open(path) as f:
        hdr = _parse(path, f, os.fstat(f.fileno()).st_size, verify)
    if hdr.kind == "ember":
        tree = hdr.tree
    else:
        from ember.checkpoint import codec

        tree = codec.weights_tree(sorted(e.name for e in hdr.entries))
    return {
        "path": str(path),
        "kind": hdr.kind,
        "format_version": hdr.format_version,
        "ember_version": hdr.ember_version,
        "tree": tree,
        "tensors": {
            e.name: {"dtype": e.dtype, "dtype_code": e.code, "shape": e.shape, "nbytes": e.end - e.begin} for e in hdr.entries
        },
        "checksummed": hdr.kind == "ember",
        "file_size": hdr.file_size,
        "header_size": hdr.data_start - 8,
        "metadata": {k: v for k, v in hdr.metadata.items() if k not in (K_STATE, K_CRC)},
    }


def verify_file(path: Any) -> None:
    """Check every byte of the file against its checksums, streaming. Raises CheckpointError on failure.

    A plain safetensors file has no checksums: its structure is checked, then CheckpointError is raised.
    """
    with _open(path) as f:
        hdr = _parse(path, f, os.fstat(f.fileno()).st_size, verify=True)
        if hdr.kind != "ember":
            raise CheckpointError(
                f"{path} is a plain safetensors file: its structure is valid but it has no ember checksums, so its bytes cannot be verified"
            )
        buf = memoryview(bytearray(min(CHUNK, max((e.end - e.begin for e in hdr.entries), default=0)) or 1))
        for e in hdr.entries:  # data order, back to back from data_start (checked by _parse)
            crc, left = 0, e.end - e.begin
            while left:
                piece = buf[: min(left, len(buf))]
                _readinto(f, piece, path, f"tensor {e.name!r}")
                crc = _crc(piece, crc)
                left -= len(piece)
            if crc != e.crc:
                raise _crc_error(path, hdr, e, crc)


def is_ember_file(path: Any) -> bool:
    """Cheap sniff: does the file start like an ember checkpoint? Never raises."""
    try:
        with _open(path) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(CRC_OFFSET)
    except (CheckpointError, OSError):
        return False
    if len(head) < CRC_OFFSET:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:] == HEADER_PREFIX and n <= size - 8
