"""A ``torch.save`` zip is checked from its central directory before anything in it is inflated.

``torch.save`` stores its entries uncompressed: ``data.pkl`` (the pickle) and ``data/<key>`` (one per
storage, exactly the bytes the pickle declares for it). A zip rewritten with compression could make a
1 MB file inflate to gigabytes (a zip bomb). So, before ``torch.load`` reads it:

* ``data.pkl`` may inflate to at most ``MAX_PICKLE`` bytes when it is compressed;
* the pickle's storages are found by walking its opcodes (nothing is executed or imported): each
  ``data/<key>`` entry must inflate to exactly the bytes its storage declares;
* the compressed entries together may inflate to at most twice the file's size plus ``SLACK`` bytes
  (a re-zipped honest checkpoint of weights compresses little; zeros by the gigabyte do not load).
"""

from __future__ import annotations

import pickletools
import warnings
import zipfile
from typing import Any, BinaryIO

import torch

from ember.errors import CheckpointCorruptError

MAX_PICKLE = 64 * 2**20
SLACK = 16 * 2**20
_PUSH = {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING",
         "BININT", "BININT1", "BININT2", "INT", "LONG1", "LONG4", "LONG"}


class _Opaque:
    """A value the walk does not follow."""


def _itemsize(storage_type: Any) -> int | None:
    if not (isinstance(storage_type, tuple) and storage_type[:1] == ("global",)):
        return None
    module, _, name = storage_type[1].partition(" ")
    if module != "torch" or not name.endswith("Storage"):
        return None
    if name == "UntypedStorage":
        return 1
    with warnings.catch_warnings():  # TypedStorage classes warn that they are deprecated
        warnings.simplefilter("ignore")
        dtype = getattr(getattr(torch, name, None), "dtype", None)  # torch's own classes: nothing imported
    return dtype.itemsize if isinstance(dtype, torch.dtype) else None


def declared_storages(pickle_bytes: bytes) -> dict[str, int]:
    """{storage key: bytes} for every ``('storage', type, key, location, numel)`` persistent id the
    pickle declares, found by tracking strings, ints, globals, tuples and the memo through its opcodes."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[Any, Any] = {}
    out: dict[str, int] = {}
    for op, arg, _ in pickletools.genops(pickle_bytes):
        name = op.name
        if name == "MARK":
            marks.append(len(stack))
        elif name in _PUSH:
            stack.append(arg)
        elif name == "GLOBAL":
            stack.append(("global", arg))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            stack.append(("global", f"{module} {attr}"))
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(arg, _Opaque()))
        elif name == "TUPLE":
            at = marks.pop()
            items = tuple(stack[at:])
            del stack[at:]
            stack.append(items)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "BINPERSID":
            pid = stack.pop()
            if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[2], str) \
                    and isinstance(pid[4], int) and _itemsize(pid[1]) is not None:
                out[pid[2]] = pid[4] * _itemsize(pid[1])
            stack.append(_Opaque())
        elif name == "STOP":
            break
        else:  # any other opcode: its documented stack effect, with opaque results
            before = op.stack_before
            if pickletools.markobject in before:
                at = marks.pop()
                del stack[at:]
                extra = before.index(pickletools.markobject)
                del stack[len(stack) - extra:]
            elif before:
                del stack[len(stack) - len(before):]
            stack.extend(_Opaque() for _ in op.stack_after)
    return out


def check_zip(f: BinaryIO, size: int, label: str) -> None:
    """Refuse a torch.save zip whose entries would inflate past what it declares (see the module
    docstring); ``f`` is left at its start. A zip torch could not read anyway is left to torch."""
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
        pickles = [i for i in infos if i.filename == "data.pkl" or i.filename.endswith("/data.pkl")]
        if len(pickles) != 1:
            return
        pkl = pickles[0]
        if pkl.compress_type != zipfile.ZIP_STORED and pkl.file_size > MAX_PICKLE:
            raise _bomb(label, f"its pickle {pkl.filename} inflates to {pkl.file_size} bytes, more than the "
                               f"{MAX_PICKLE} allowed for a compressed pickle")
        with zf.open(pkl) as p:  # stored: its bytes are in the file; compressed: at most MAX_PICKLE
            declared = declared_storages(p.read() if pkl.compress_type == zipfile.ZIP_STORED else p.read(MAX_PICKLE))
        prefix = pkl.filename[: -len("data.pkl")] + "data/"
        for i in infos:
            key = i.filename[len(prefix):] if i.filename.startswith(prefix) else None
            if key in declared and i.file_size != declared[key]:
                raise _bomb(label, f"zip entry {i.filename} inflates to {i.file_size} bytes, but its pickle declares "
                                   f"{declared[key]} for it")
        inflated = sum(i.file_size for i in infos if i.compress_type != zipfile.ZIP_STORED)
        if inflated > 2 * size + SLACK:
            raise _bomb(label, f"its compressed entries inflate to {inflated} bytes from a {size}-byte file")
    except (zipfile.BadZipFile, ValueError, EOFError, IndexError, KeyError):
        return  # damage: torch.load reports it
    finally:
        f.seek(0)


def _bomb(label: str, why: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"corrupt checkpoint {label}: {why}; it is refused before anything is inflated "
                                  "(torch.save never compresses; a zip that inflates past what it declares is a zip "
                                  "bomb or damaged)")
