"""Loading checkpoints that ember did not write: ``torch.save`` files, weights-only at most.

A file that would need more than ``torch.load(..., weights_only=True)`` (custom classes,
a pickle whose ``__reduce__`` calls a function) is refused: loading it could run code. The one
widening: PyTorch Lightning's ``AttributeDict`` and ``argparse.Namespace``, which Lightning files hold,
are read as plain data (``lightning_pickles.load_weights_only``).
A damaged file is reported as corruption, not as unsafe: a legacy (non-zip) file's pickles are
first walked opcode by opcode (nothing is executed) to find a truncation, and a refused global
that names nothing importable (``torch._utils._rebuild_te``: a name cut short) is damage too.
"""

from __future__ import annotations

import argparse
import errno
import pickle
import pickletools
import re
import sys
import warnings
from collections.abc import Mapping
from typing import Any, BinaryIO

import torch

from ember.checkpoint.format.header import HEADER_PREFIX, MAX_HEADER
from ember.checkpoint.format.unpickle import load_weights_only
from ember.checkpoint.format.numpy_pickles import REFUSED
from ember.checkpoint.storage.locations import open_checkpoint, resolve
from ember.checkpoint.format.zip_bounds import check_zip
from ember.errors import CheckpointCorruptError, CheckpointError, UnsafeCheckpointError

__all__ = ["load_foreign", "load_foreign_stream", "sniff", "sniff_stream"]

# What torch's weights-only unpickler says when a pickle needs more than tensors and containers
# (torch 2.4-2.13 phrasings): a GLOBAL it does not allow, or an opcode/call it does not support.
_UNSAFE_MARKERS = ("GLOBAL", "global", "Unsupported operand", "unrecognized function", "is blocked")
_LEGACY_PICKLES = 5  # magic number, protocol version, system info, the object, the storage keys
MAX_EXPANDED = 5_000_000  # values a loaded checkpoint may hold once shared references are written out


def sniff_stream(f: BinaryIO, size: int) -> str:
    """What an open file (at its start) looks like from its first bytes: "ember", "safetensors",
    "torch-zip", "torch-pickle", "empty" or "unknown". Leaves ``f`` at its start again."""
    head = f.read(8 + len(HEADER_PREFIX))
    f.seek(0)
    if not head:
        return "empty"
    if head[8:] == HEADER_PREFIX:
        return "ember"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= min(size - 8, MAX_HEADER):
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-pickle"
    return "unknown"


def sniff(path: Any) -> str:
    """``sniff_stream`` for a location. Never raises for a readable file; a FIFO or device is "unknown"
    (never read: it could block). A missing file or a folder raises FileNotFoundError / IsADirectoryError."""
    store, name = resolve(path)
    try:
        with store.open_read(name) as (f, size):
            return sniff_stream(f, size)
    except OSError as e:
        if e.errno == errno.EINVAL and not isinstance(e, (FileNotFoundError, IsADirectoryError)):
            return "unknown"
        raise


def _unsafe_message(label: str, name: str | None) -> str:
    what = f"it references {name}" if name else "it needs more than tensors and plain containers"
    return (
        f"{label} is a torch.save pickle that can only be loaded by running code from the file ({what}), "
        "so ember refuses to load it. If you trust where it came from, convert it once in a trusted "
        "environment: `ckpt = torch.load(path, weights_only=False)`, then re-save it with "
        "`ember.save_checkpoint(...)` / `trainer.save_checkpoint(...)` (or save only plain data, e.g. "
        "`torch.save(ckpt['state_dict'], 'weights.pt')`). Never load untrusted files with weights_only=False."
    )


class _Bounded:
    """Reads of at most the bytes left in the file, so a hostile length field allocates nothing big."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f, self._left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self._f.readline(self._left)
        self._left -= len(data)
        return data


def _legacy_damage(f: BinaryIO, size: int) -> str | None:
    """Why the pickles at the start of a legacy torch.save file are incomplete or invalid, or None.
    Opcodes are only parsed (pickletools.genops), never executed."""
    stream = _Bounded(f, size)
    try:
        for _ in range(_LEGACY_PICKLES):
            for _ in pickletools.genops(stream):
                pass
    except (ValueError, EOFError) as e:
        return str(e) or type(e).__name__
    finally:
        f.seek(0)
    return None


def _refused_global(msg: str) -> str | None:
    m = re.search(r"GLOBAL ([\w.]+)", msg)
    return m.group(1) if m else None


def _names_nothing(name: str) -> bool:
    """Whether ``name`` is provably not a real global: its module is imported here (nothing is
    imported to find out) but has no such attribute. ``__main__`` is never judged."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:i]))
        if module is None:
            continue
        if parts[0] == "__main__":
            return False
        obj: Any = module
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return True
            obj = getattr(obj, attr)
        return False
    return False


def load_foreign_stream(f: BinaryIO, size: int, label: str, map_location: Any = None, kind: str | None = None) -> dict:
    """``load_foreign`` for an open binary file ``f`` of ``size`` bytes, positioned at its start."""
    kind = kind or sniff_stream(f, size)
    if kind not in ("torch-zip", "torch-pickle"):
        raise CheckpointCorruptError(
            f"{label} is not a checkpoint: it is neither an ember checkpoint, a safetensors file nor a torch.save file"
            + (" (it is empty)" if kind == "empty" else "")
        )
    if kind == "torch-zip":
        check_zip(f, size, label)  # from the central directory, before anything is inflated
    damage = _legacy_damage(f, size) if kind == "torch-pickle" else None
    if damage:
        raise CheckpointCorruptError(f"corrupt checkpoint {label}: the torch.save pickle is truncated or damaged "
                                     f"({_tail(damage)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = load_weights_only(f, map_location=map_location)
    except pickle.UnpicklingError as e:
        msg, name = str(e), _refused_global(str(e))
        if any(marker in msg for marker in _UNSAFE_MARKERS) and not (name and _names_nothing(name)):
            raise UnsafeCheckpointError(_unsafe_message(label, name)) from None
        if name:
            msg = f"it references {name}, which does not exist: a truncated or damaged pickle"
        raise CheckpointCorruptError(f"corrupt checkpoint {label}: the torch.save pickle is damaged "
                                     f"({_tail(msg)})") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, UnicodeDecodeError... for damaged files
        if REFUSED in str(e):  # a numpy value the numeric allowlist does not read (an object array...)
            raise UnsafeCheckpointError(f"{label}: {_tail(str(e))}. {_unsafe_message(label, None)}") from None
        raise CheckpointCorruptError(
            f"corrupt checkpoint {label}: torch.load could not read this {kind} file "
            f"({type(e).__name__}: {_tail(str(e))})"
        ) from None
    if _expanded_size(obj, MAX_EXPANDED) > MAX_EXPANDED:
        raise CheckpointCorruptError(
            f"{label}: its pickle expands to more than {MAX_EXPANDED} values once its shared references are written "
            "out (a few bytes can name one list twice, sixty times over); ember refuses it rather than expand it. "
            "If it is yours, load it with torch.load in a trusted process and save only the values you need")
    if (isinstance(obj, Mapping) and "state_dict" not in obj and obj
            and all(isinstance(v, torch.Tensor) for v in obj.values())):
        return {"state_dict": obj}
    if not isinstance(obj, dict):
        raise CheckpointError(f"{label} holds a {type(obj).__name__}, not a checkpoint dict; "
                              "load it with torch.load instead")
    return obj


def _children(v: Any) -> list | None:
    t = type(v)
    if isinstance(v, dict):
        return [*v.keys(), *v.values()]
    if t in (list, tuple, set, frozenset):
        return list(v)
    if t is argparse.Namespace:
        return list(vars(v).values())
    return None


def _expanded_size(obj: Any, limit: int) -> int:
    """How many values ``obj`` holds when every shared reference is written out in full (as a tree
    encoder writes it), counted once per distinct container (linear time, no recursion); counting
    stops a little past ``limit``. A reference back into a container being counted counts as one."""
    sizes: dict[int, int] = {}
    pending: set[int] = set()
    stack: list[tuple[Any, bool]] = [(obj, False)]
    while stack:
        v, done = stack.pop()
        kids = _children(v)
        if kids is None or id(v) in sizes:
            continue
        if done:
            sizes[id(v)] = min(limit + 1, 1 + sum(sizes.get(id(k), 1) for k in kids))
            continue
        if id(v) in pending:
            continue
        pending.add(id(v))
        stack.append((v, True))
        stack.extend((k, False) for k in kids if id(k) not in sizes)
    return sizes.get(id(obj), 1)


def load_foreign(path: Any, map_location: Any = None, kind: str | None = None) -> dict:
    """Load a ``torch.save`` file with ``torch.load(weights_only=True)``.

    A bare ``{name: tensor}`` mapping (a saved ``state_dict``) is returned as
    ``{"state_dict": mapping}``; other dicts are returned as they are.
    Raises UnsafeCheckpointError for files that need arbitrary code, CheckpointCorruptError
    for truncated/garbage files and files that are not checkpoints.
    """
    store, name = resolve(path)
    with open_checkpoint(store, name, str(path)) as (f, size):
        return load_foreign_stream(f, size, str(path), map_location=map_location, kind=kind)


def _tail(msg: str) -> str:
    msg = msg.strip().splitlines()[-1] if msg.strip() else "no details"
    return msg if len(msg) <= 200 else msg[:197] + "..."
