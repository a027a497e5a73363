"""State tree nodes for sets, frozensets, pathlib paths and enum members (docs/FORMAT.md, section 5).

Decoding them runs no code from the file: an enum class is looked up among the modules already
imported (``sys.modules``, plain ``__dict__`` lookups), never imported.
"""

from __future__ import annotations

import enum
import os
import re
import sys
import warnings
from pathlib import PosixPath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any

from ember.errors import CheckpointCorruptError

__all__ = ["PATH_KINDS", "TypedNodes"]

PATH_KINDS = {"posix": PosixPath, "windows": WindowsPath, "pure_posix": PurePosixPath, "pure_windows": PureWindowsPath}
_CONCRETE_HERE = "windows" if os.name == "nt" else "posix"  # the other kind loads as its pure class
_ENUM_CLASS = re.compile(r"[\w.]{1,200}:[\w.<>]{1,200}")  # module:qualname (a local class has <locals> in it)


def _imported_class(qualified: str) -> Any:
    """The object ``module:qual.name`` if its module is already in sys.modules; plain dict lookups only."""
    module_name, qualname = qualified.split(":", 1)
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        namespace = getattr(obj, "__dict__", None) if obj is not None else None
        obj = namespace.get(part) if namespace is not None else None
    return obj


def _bad(msg: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"malformed state tree: {msg}")


class TypedNodes:
    """Decoder methods for the ``set``, ``frozenset``, ``path`` and ``enum`` tags; the decoder
    provides ``value(node, depth, in_key)``, ``_list(v, what)`` and ``tensors``."""

    def _set(self, node: dict, depth: int, in_key: bool) -> set:
        return self._members(node, depth, set)

    def _frozenset(self, node: dict, depth: int, in_key: bool) -> frozenset:
        return self._members(node, depth, frozenset)

    def _members(self, node: dict, depth: int, cls: type) -> Any:
        tag = node["$"]
        items = [self.value(x, depth + 1, True) for x in self._list(node["items"], tag)]
        try:
            out = cls(items)
        except TypeError:
            raise _bad(f"a {tag!r} member is unhashable") from None
        if len(out) != len(items):
            raise _bad(f"a {tag!r} node lists a member twice")
        return out

    # paths and enums ----------------------------------------------------------
    def _path(self, node: dict, depth: int, in_key: bool) -> Any:
        kind, v = node["kind"], node["v"]
        if kind not in PATH_KINDS or type(v) is not str or "\x00" in v:
            raise _bad(f"a 'path' node holds a kind in {sorted(PATH_KINDS)} and a string, got {kind!r:.40}, {v!r:.40}")
        if kind in ("posix", "windows") and kind != _CONCRETE_HERE:
            kind = "pure_" + kind  # a Windows path read on Linux (or the reverse) keeps its syntax
        return PATH_KINDS[kind](v)

    def _enum(self, node: dict, depth: int, in_key: bool) -> Any:
        """The member when its class is already imported here (looked up in sys.modules, never
        imported: importing runs code); else the member's value, with a warning."""
        cls_name, name = node["cls"], node["name"]
        if type(cls_name) is not str or not _ENUM_CLASS.fullmatch(cls_name) or not (name is None or type(name) is str):
            raise _bad(f"an 'enum' node holds 'module:qualname' and a member name, got {cls_name!r:.80}")
        value = self.value(node["v"], depth + 1, in_key)
        cls = _imported_class(cls_name)
        member = None
        if isinstance(cls, type) and issubclass(cls, enum.Enum):
            member = cls.__members__.get(name) if name is not None else None
            if member is None:
                try:
                    member = cls._value2member_map_.get(value)
                except TypeError:
                    member = None
        if member is not None:
            return member
        if self.tensors is not None:
            warnings.warn(f"the checkpoint holds a member of the enum {cls_name}, which is not imported (or has no "
                          f"member {name!r}); it is loaded as its value {value!r:.60}. Import the enum's module "
                          "before loading to get the member back.", stacklevel=6)
        return value
