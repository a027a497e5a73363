"""Text for the ``ember`` command: everything shown comes from files that may be hostile, so human
output escapes every character a terminal would act on and abbreviates huge integers; ``--json``
keeps exact strings."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

OPTIONS = {"traceback": False}  # `ember --traceback`: let unexpected errors through, for bug reports


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def escape(text: str) -> str:
    """``text`` safe for a terminal: each character that is not printable (control characters such as
    ESC, bidi overrides, lone surrogates from undecodable file names) is shown as its escape, ``\\x1b``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def say(line: str = "") -> None:
    """Print one line of human output; nothing taken from a file reaches the terminal unescaped."""
    print(escape(line))


def _decimal(v: int) -> str | None:
    """``str(v)``, or None where Python refuses (more digits than ``sys.get_int_max_str_digits()``)."""
    try:
        return str(v)
    except ValueError:
        return None


def _int_text(v: int) -> str:
    """An int for people: in full up to 39 digits, else its first and last hex digits and its size."""
    if v.bit_length() <= 128:
        return str(v)
    digits = int(v.bit_length() * math.log10(2)) + 1
    h = format(abs(v), "x")
    return f"{'-' if v < 0 else ''}0x{h[:8]}…{h[-8:]} (an integer of about {digits} digits)"


def human(v: Any) -> str:
    """A value for people: JSON-like, with huge integers abbreviated (escaping is ``say``'s job)."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int):
        return _int_text(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        return json.dumps(v) if math.isfinite(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(human(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{human(k)}: {human(x)}" for k, x in v.items()) + "}"
    return repr(v)


def plain(v: Any) -> Any:
    """A value as it appears in a cell: strings unquoted, everything else as ``human`` shows it."""
    return v if isinstance(v, str) else human(v)


def json_doc(doc: Any) -> str:
    """One JSON document. Integers Python will not write in decimal become their exact hex string."""

    def ints(v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return v if _decimal(v) is not None else hex(v)
        if isinstance(v, list):
            return [ints(x) for x in v]
        if isinstance(v, dict):
            return {k: ints(x) for k, x in v.items()}
        return v

    return json.dumps(ints(doc), indent=2)


def unexpected(path: Any, e: Exception) -> str:
    return (f"{path}: unexpected {type(e).__name__} while reading it: {e}. This is a bug in ember; please "
            "report it (`ember --traceback ...` shows where it happened).")


def key(k: Any) -> str:
    """A dict key from a file as text (an int key may be too long for str())."""
    if isinstance(k, str):
        return k
    try:
        return str(k)
    except ValueError:
        return human(k)


def jsonable(v: Any) -> Any:
    """Plain JSON for --json output: containers become lists/objects, everything else its repr."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {key(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, argparse.Namespace):
        return jsonable(vars(v))
    return repr(v)
