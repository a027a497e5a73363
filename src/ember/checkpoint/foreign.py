"""Loading checkpoints that ember did not write: ``torch.save`` files, weights-only at most.

A file that would need more than ``torch.load(..., weights_only=True)`` (custom classes,
a pickle whose ``__reduce__`` calls a function) is refused: loading it could run code.
"""

from __future__ import annotations

import os
import pickle
import re
import stat
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ember.errors import CheckpointCorruptError, CheckpointError, UnsafeCheckpointError

__all__ = ["load_foreign", "sniff"]

# What torch's weights-only unpickler says when a pickle needs more than tensors and containers
# (torch 2.4-2.13 phrasings): a GLOBAL it does not allow, or an opcode/call it does not support.
_UNSAFE_MARKERS = ("GLOBAL", "global", "Unsupported operand", "unrecognized function", "is blocked")


def sniff(path: Any) -> str:
    """What the file looks like from its first bytes: "ember", "safetensors", "torch-zip",
    "torch-pickle", "empty" or "unknown". Never raises for a readable file."""
    from ember.checkpoint.fileformat import HEADER_PREFIX, MAX_HEADER

    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not stat.S_ISREG(mode):
        return "unknown"  # a FIFO or device: never opened, it could block
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8 + len(HEADER_PREFIX))
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


def _unsafe_message(path: Any, err: str) -> str:
    m = re.search(r"GLOBAL ([\w.]+)", err)
    what = f"it references {m.group(1)}" if m else "it needs more than tensors and plain containers"
    return (
        f"{path} is a torch.save pickle that can only be loaded by running code from the file ({what}), "
        "so ember refuses to load it. If you trust where it came from, convert it once in a trusted "
        "environment: `ckpt = torch.load(path, weights_only=False)`, then re-save it with "
        "`ember.save_checkpoint(...)` / `trainer.save_checkpoint(...)` (or save only plain data, e.g. "
        "`torch.save(ckpt['state_dict'], 'weights.pt')`). Never load untrusted files with weights_only=False."
    )


def checked_sniff(path: Any) -> str:
    """``sniff``, with a missing, unreadable or folder path reported as a CheckpointError."""
    try:
        return sniff(path)
    except IsADirectoryError:
        raise CheckpointError(f"no checkpoint at {path}: it is a directory; pass the checkpoint file inside it") from None
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}: the file does not exist. Check the path.") from None
    except OSError as e:
        raise CheckpointError(f"cannot open checkpoint {path}: {e.strerror or e}") from None


def load_foreign(path: Any, map_location: Any = None, kind: str | None = None) -> dict:
    """Load a ``torch.save`` file with ``torch.load(weights_only=True)``.

    A bare ``{name: tensor}`` mapping (a saved ``state_dict``) is returned as
    ``{"state_dict": mapping}``; other dicts are returned as they are.
    Raises UnsafeCheckpointError for files that need arbitrary code, CheckpointCorruptError
    for truncated/garbage files and files that are not checkpoints.
    """
    kind = kind or checked_sniff(path)
    if kind not in ("torch-zip", "torch-pickle"):
        raise CheckpointCorruptError(
            f"{path} is not a checkpoint: it is neither an ember checkpoint, a safetensors file nor a torch.save file"
            + (" (it is empty)" if kind == "empty" else "")
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if any(marker in msg for marker in _UNSAFE_MARKERS):
            raise UnsafeCheckpointError(_unsafe_message(path, msg)) from None
        raise CheckpointCorruptError(f"corrupt checkpoint {path}: the torch.save pickle is damaged ({_tail(msg)})") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, UnicodeDecodeError... for damaged files
        raise CheckpointCorruptError(
            f"corrupt checkpoint {path}: torch.load could not read this {kind} file ({type(e).__name__}: {_tail(str(e))})"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" not in obj and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict; load it with torch.load instead")
    return obj


def _tail(msg: str) -> str:
    msg = msg.strip().splitlines()[-1] if msg.strip() else "no details"
    return msg if len(msg) <= 200 else msg[:197] + "..."
