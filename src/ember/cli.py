"""The ``ember`` command line: ``ember ckpt inspect PATH``, ``ember ckpt verify PATH...`` and
``ember ckpt ls DIR``.

Everything shown comes from files that may be hostile. Human output escapes every character a
terminal would act on and abbreviates huge integers; ``--json`` keeps exact strings. An unexpected
error on one file becomes one line that names the file (exit code 1), not a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from typing import Any

from ember.errors import CheckpointError, UnsafeCheckpointError

__all__ = ["main"]

_PARTS = (("weights", "state_dict."), ("optimizer", "optimizer_states."))
_KINDS = {
    "ember": "ember checkpoint",
    "safetensors": "plain safetensors file (not written by ember)",
    "torch-zip": "torch.save file (zip)",
    "torch-pickle": "torch.save file (legacy pickle)",
}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _escape(text: str) -> str:
    """``text`` safe for a terminal: each character that is not printable (control characters such as
    ESC, bidi overrides, lone surrogates from undecodable file names) is shown as its escape, ``\\x1b``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _say(line: str = "") -> None:
    """Print one line of human output; nothing taken from a file reaches the terminal unescaped."""
    print(_escape(line))


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


def _human(v: Any) -> str:
    """A value for people: JSON-like, with huge integers abbreviated (escaping is ``_say``'s job)."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int):
        return _int_text(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        return json.dumps(v) if math.isfinite(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_human(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_human(k)}: {_human(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _plain(v: Any) -> Any:
    """A value as it appears in a cell: strings unquoted, everything else as ``_human`` shows it."""
    return v if isinstance(v, str) else _human(v)


def _json_doc(doc: Any) -> str:
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


def _unexpected(path: Any, e: Exception) -> str:
    return (f"{path}: unexpected {type(e).__name__} while reading it: {e}. This is a bug in ember; please "
            "report it (`ember --traceback ...` shows where it happened).")


def _key(k: Any) -> str:
    """A dict key from a file as text (an int key may be too long for str())."""
    if isinstance(k, str):
        return k
    try:
        return str(k)
    except ValueError:
        return _human(k)


def _jsonable(v: Any) -> Any:
    """Plain JSON for --json output: containers become lists/objects, everything else its repr."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {_key(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, argparse.Namespace):
        return _jsonable(vars(v))
    return repr(v)


def _logical_dtypes(tree: Any, out: dict[str, tuple]) -> dict[str, tuple]:
    """name -> (dtype, shape) for tensors stored through a carrier dtype (e.g. complex128)."""
    if isinstance(tree, list):
        for x in tree:
            _logical_dtypes(x, out)
    elif isinstance(tree, dict):
        if tree.get("$") == "tensor" and isinstance(tree.get("dtype"), str) and isinstance(tree.get("name"), str):
            out[tree["name"]] = (tree["dtype"], tree.get("shape"))
        for x in tree.values():
            _logical_dtypes(x, out)
    return out


def _summarise_header(hdr: dict, with_tensors: bool) -> dict:
    from ember.checkpoint import codec

    state = codec.unflatten(hdr["tree"], None)
    logical = _logical_dtypes(hdr["tree"], {})
    parts = {name: {"count": 0, "bytes": 0} for name in ("weights", "optimizer", "other")}
    dtypes, tensors = set(), []
    for name, info in hdr["tensors"].items():
        part = next((p for p, prefix in _PARTS if name.startswith(prefix)), "other")
        parts[part]["count"] += 1
        parts[part]["bytes"] += info["nbytes"]
        dtype, shape = logical.get(name, (str(info["dtype"]).removeprefix("torch."), info["shape"]))
        dtypes.add(dtype)
        if with_tensors:
            tensors.append({"name": name, "shape": list(shape), "dtype": dtype, "bytes": info["nbytes"]})
    callbacks = state.get("callbacks")
    out = {
        "path": hdr["path"],
        "kind": hdr["kind"],
        "format_version": hdr["format_version"],
        "ember_version": hdr["ember_version"],
        "file_size": hdr["file_size"],
        "epoch": _jsonable(state.get("epoch")),
        "global_step": _jsonable(state.get("global_step")),
        "tensor_count": len(hdr["tensors"]),
        "tensor_bytes": sum(i["nbytes"] for i in hdr["tensors"].values()),
        "parts": parts,
        "dtypes": sorted(dtypes),
        "hyper_parameters": _jsonable(state.get("hyper_parameters")),
        "callbacks": [_key(k) for k in callbacks] if isinstance(callbacks, dict) else _jsonable(callbacks),
        "keys": [_key(k) for k in state],
    }
    if with_tensors:
        out["tensors"] = tensors
    return out


def _inspect(path: str, with_tensors: bool) -> tuple[dict, int]:
    from ember.checkpoint import fileformat
    from ember.checkpoint.foreign import load_foreign, sniff

    try:
        kind = sniff(path)
    except OSError as e:
        return {"path": path, "kind": None, "error": f"cannot open: {e.strerror or e}"}, 1
    if kind in ("ember", "safetensors"):
        try:
            info = _summarise_header(fileformat.read_header(path), with_tensors)
        except CheckpointError as e:
            return {"path": path, "kind": kind, "error": str(e), "checksums": {"status": "failed", "reason": str(e)}}, 1
        if info["kind"] != "ember":
            info["checksums"] = {"status": "unavailable", "reason": "plain safetensors files carry no checksums"}
            return info, 0
        try:
            fileformat.verify_file(path)
        except CheckpointError as e:
            info["checksums"] = {"status": "failed", "reason": str(e)}
            return info, 1
        info["checksums"] = {"status": "ok", "reason": "every byte verified"}
        return info, 0
    info: dict[str, Any] = {"path": path, "kind": kind}
    if kind not in ("torch-zip", "torch-pickle"):
        info["error"] = "not a checkpoint: neither an ember checkpoint, a safetensors file nor a torch.save file"
        return info, 1
    try:
        state = load_foreign(path)
    except UnsafeCheckpointError as e:
        info["error"] = f"refused as unsafe: {e}"
        return info, 1
    except CheckpointError as e:
        info["error"] = str(e)
        return info, 1
    info["note"] = "not an ember checkpoint: inspected only through a weights-only torch.load, no checksums"
    info["keys"] = [_key(k) for k in state]
    info["epoch"] = _jsonable(state.get("epoch"))
    info["global_step"] = _jsonable(state.get("global_step"))
    return info, 0


def _print_inspect(info: dict) -> None:
    def row(label: str, value: Any) -> None:
        _say(f"{label:<13}{value}")

    row("checkpoint", info["path"])
    kind = _KINDS.get(info.get("kind") or "", info.get("kind") or "unknown")
    if info.get("format_version"):
        kind += f", format {_plain(info['format_version'])}, written by ember {_plain(info['ember_version'])}"
    row("kind", kind)
    if "error" in info:
        row("error", info["error"])
        return
    if "note" in info:
        row("note", info["note"])
    for key, label in (("epoch", "epoch"), ("global_step", "global step")):
        if info.get(key) is not None:
            row(label, _plain(info[key]))
    if "tensor_count" in info:
        row("tensors", f"{info['tensor_count']} tensors, {_size(info['tensor_bytes'])}")
        for name, prefix in (*_PARTS, ("other", None)):
            part = info["parts"][name]
            where = f" ({prefix}*)" if prefix else ""
            row(f"  {name}", f"{part['count']} tensors, {_size(part['bytes'])}{where}")
        row("dtypes", ", ".join(info["dtypes"]) or "-")
    hp = info.get("hyper_parameters")
    if isinstance(hp, dict):
        row("hparams", "" if hp else "-")
        for k, v in hp.items():
            _say(f"  {k:<20} {_human(v)}")
    elif hp is not None:
        row("hparams", _plain(hp))
    if "callbacks" in info and info["callbacks"] is not None:
        callbacks = info["callbacks"]
        row("callbacks", ", ".join(map(str, callbacks)) if isinstance(callbacks, list) else _plain(callbacks))
    if "keys" in info:
        row("keys", ", ".join(info["keys"]))
    if "checksums" in info:
        c = info["checksums"]
        status = {"ok": "verified OK", "failed": "FAILED", "unavailable": "not available"}[c["status"]]
        row("checksums", f"{status} ({c['reason']})")
    for t in info.get("tensors", []):
        _say(f"  {t['name']}  {tuple(t['shape'])}  {t['dtype']}  {_size(t['bytes'])}")


def _inspect_safely(path: str, with_tensors: bool) -> tuple[dict, int]:
    try:
        return _inspect(path, with_tensors)
    except Exception as e:  # a hostile file must not end in a traceback
        if _TRACEBACK:
            raise
        return {"path": path, "kind": None, "error": _unexpected(path, e)}, 1


def _verify_safely(path: str) -> tuple[bool, str]:
    try:
        return _verify(path)
    except Exception as e:  # a hostile file must not end in a traceback
        if _TRACEBACK:
            raise
        return False, _unexpected(path, e)


def _verify(path: str) -> tuple[bool, str]:
    from ember.checkpoint import fileformat
    from ember.checkpoint.foreign import sniff

    try:
        kind = sniff(path)
    except FileNotFoundError:
        return False, "no such file"
    except OSError as e:
        return False, f"cannot open: {e.strerror or e}"
    if kind not in ("ember", "safetensors"):
        what = _KINDS.get(kind, "not a checkpoint")
        return False, f"not an ember checkpoint ({what}); only ember checkpoints carry checksums"
    try:
        fileformat.verify_file(path)
    except CheckpointError as e:
        return False, str(e)
    return True, "every byte verified"


# ----------------------------------------------------------------------------- ember ckpt ls


def _listed(entry: os.DirEntry) -> str | None:
    """Whether ``ls`` shows a folder entry: "file" for a ``*.ckpt`` file, "folder" for a checkpoint
    folder (sharded; recognised by the ``metadata`` file inside it), None to skip it (temporary
    files of a save in progress, anything else)."""
    from ember.checkpoint.storage import TMP_PREFIX

    if entry.name.startswith(TMP_PREFIX):
        return None
    try:
        if entry.is_dir():
            return "folder" if os.path.isfile(os.path.join(entry.path, "metadata")) else None
        return "file" if entry.name.endswith(".ckpt") else None
    except OSError:
        return "file" if entry.name.endswith(".ckpt") else None


def _own_score(state: dict, path: str) -> tuple[bool, Any]:
    """This file's score as a ModelCheckpoint state lists it (by full path, or by name when the folder
    was moved): (found, score)."""
    name = os.path.basename(path)
    real = os.path.realpath(path)
    listed = state.get("best_k_models")
    if isinstance(listed, dict):
        for p, score in listed.items():
            if isinstance(p, str) and (os.path.realpath(p) == real or os.path.basename(p) == name):
                return True, score
    records = state.get("checkpoints")
    if isinstance(records, list):
        for r in records:
            if isinstance(r, dict) and r.get("name") == name and "score" in r:
                return True, r["score"]
    return False, None


def _monitored(callbacks: Any, path: str) -> tuple[str | None, Any]:
    """(monitored metric, this checkpoint's value of it) from the ModelCheckpoint states in its
    ``callbacks``: the score listed for this very file; else ``current_score`` (the score of the save
    that wrote the state, e.g. for ``last.ckpt``); else the metric alone. (None, None) without one."""
    if not isinstance(callbacks, dict):
        return None, None
    states = [s for s in callbacks.values() if isinstance(s, dict) and isinstance(s.get("monitor"), str)
              and ("best_k_models" in s or "current_score" in s)]
    for s in states:
        found, score = _own_score(s, path)
        if found:
            return s["monitor"], score
    for s in states:
        if s.get("current_score") is not None:
            return s["monitor"], s["current_score"]
    return (states[0]["monitor"], None) if states else (None, None)


def _ls_file(path: str) -> dict:
    """What a file's header says (never the tensor bytes): epoch, step, monitored metric."""
    from ember.checkpoint import codec, fileformat
    from ember.checkpoint.foreign import sniff

    row: dict[str, Any] = {}
    kind = sniff(path)
    row["format"] = kind
    if kind in ("torch-zip", "torch-pickle"):
        row["note"] = "torch.save file: not read here (`ember ckpt inspect` reads it weights-only)"
        return row
    if kind == "empty":
        row["error"] = "an empty file (0 bytes)"
        return row
    if kind not in ("ember", "safetensors"):
        row["error"] = "not a checkpoint: neither an ember checkpoint, a safetensors file nor a torch.save file"
        return row
    try:
        state = codec.unflatten(fileformat.read_header(path)["tree"], None)
    except CheckpointError as e:
        row["error"] = str(e)
        return row
    row["epoch"] = _jsonable(state.get("epoch"))
    row["global_step"] = _jsonable(state.get("global_step"))
    row["monitor"], score = _monitored(state.get("callbacks"), path)
    row["score"] = _jsonable(score)
    return row


def _folder_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _ls_entry(entry: os.DirEntry, what: str, verify: bool) -> dict:
    path = entry.path
    row: dict[str, Any] = {"name": entry.name, "path": path, "kind": what, "format": None, "epoch": None,
                           "global_step": None, "monitor": None, "score": None, "size": None, "mtime": None}
    try:
        if what == "folder":
            row["size"] = _folder_size(path)
            row["mtime"] = os.stat(os.path.join(path, "metadata")).st_mtime
            row["note"] = "sharded checkpoint folder: not read by this version of ember"
        else:
            st = os.stat(path)
            row["size"], row["mtime"] = st.st_size, st.st_mtime
            row.update(_ls_file(path))
    except OSError as e:
        row["error"] = f"cannot read: {e.strerror or e}"
    except Exception as e:  # a hostile file must not end the listing
        if _TRACEBACK:
            raise
        row["error"] = _unexpected(path, e)
    if row["mtime"] is not None:
        row["modified"] = datetime.datetime.fromtimestamp(row["mtime"], datetime.timezone.utc).isoformat()
    if verify:
        if "error" in row:
            row["verified"] = {"ok": False, "detail": row["error"]}
        elif what == "folder":
            row["verified"] = {"ok": None, "detail": "not checked: this version cannot verify sharded checkpoints"}
        else:
            ok, detail = _verify_safely(path)
            row["verified"] = {"ok": ok, "detail": detail}
    return row


def _ls_order(row: dict) -> tuple:
    """By global step, then modification time; rows without a readable step last."""
    step = row["global_step"]
    known = isinstance(step, int) and not isinstance(step, bool)
    return (not known, step if known else 0, row["mtime"] or 0.0, row["name"])


def _ls(folder: str, verify: bool) -> list[dict]:
    rows = []
    with os.scandir(folder) as entries:
        for entry in entries:
            what = _listed(entry)
            if what is not None:
                rows.append(_ls_entry(entry, what, verify))
    return sorted(rows, key=_ls_order)


def _metric_text(row: dict) -> str:
    if row["monitor"] is None:
        return "-"
    score = row["score"]
    if isinstance(score, float) and math.isfinite(score):
        value = f"{score:.6g}"
    else:
        value = "?" if score is None else _plain(score)
    return f"{row['monitor']}={value}"


def _print_ls(folder: str, rows: list[dict], verify: bool) -> None:
    if not rows:
        _say(f"no checkpoints in {folder}")
        return
    table = [("NAME", "EPOCH", "STEP", "METRIC", "SIZE", "MODIFIED", "STATUS" if verify else "")]
    for r in rows:
        if verify:
            v = r["verified"]
            status = {True: "OK", None: v["detail"]}.get(v["ok"], f"FAILED: {v['detail']}")
        else:
            status = f"unreadable: {r['error']}" if "error" in r else ""
        if "note" in r:
            status = f"{status} ({r['note']})" if status else r["note"]
        table.append((
            _escape(r["name"]),
            "-" if r["epoch"] is None else _escape(_plain(r["epoch"])),
            "-" if r["global_step"] is None else _escape(_plain(r["global_step"])),
            _escape(_metric_text(r)),
            "-" if r["size"] is None else _size(r["size"]),
            "-" if r["mtime"] is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["mtime"])),
            status,
        ))
    widths = [max(len(line[i]) for line in table) for i in range(6)]
    right = (False, True, True, False, True, False)
    for line in table:
        cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right)]
        _say("  ".join([*cells, line[6]]).rstrip())


# ----------------------------------------------------------------------------- the command


_TRACEBACK = False  # `ember --traceback`: let unexpected errors through, for bug reports


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ember", description="ember command line tools",
        epilog="commands:\n  ember ckpt inspect PATH     summarise a checkpoint\n"
               "  ember ckpt verify PATH...  check every byte of checkpoints\n"
               "  ember ckpt ls DIR          list the checkpoints in a folder",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traceback", action="store_true", help="show the traceback of an unexpected error (for bug reports)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    ckpt = sub.add_parser("ckpt", help="inspect, verify and list checkpoints").add_subparsers(dest="action", metavar="ACTION")
    ins = ckpt.add_parser("inspect", help="summarise a checkpoint (verifies its checksums)")
    ins.add_argument("path")
    ins.add_argument("--tensors", action="store_true", help="list every tensor's name, shape and dtype")
    ins.add_argument("--json", action="store_true", help="print one JSON document")
    ver = ckpt.add_parser("verify", help="check every byte of checkpoints against their checksums")
    ver.add_argument("paths", nargs="+", metavar="PATH")
    ver.add_argument("--json", action="store_true", help="print one JSON document")
    ls = ckpt.add_parser("ls", help="list the checkpoints (*.ckpt) in a folder, reading only their headers")
    ls.add_argument("folder", metavar="DIR")
    ls.add_argument("--verify", action="store_true", help="also check every byte of each checkpoint")
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    return p


def _ls_command(folder: str, verify: bool, as_json: bool) -> int:
    if not os.path.isdir(folder):
        why = "it is a file; `ember ckpt inspect` reads one checkpoint" if os.path.exists(folder) else "it does not exist"
        print(_escape(f"ember: error: no folder at {folder}: {why}. Pass the folder that holds the .ckpt files."),
              file=sys.stderr)
        return 2
    try:
        rows = _ls(folder, verify)
    except OSError as e:
        print(_escape(f"ember: error: cannot list {folder}: {e.strerror or e}"), file=sys.stderr)
        return 2
    bad = any(r.get("verified", {}).get("ok") is False for r in rows)
    if as_json:
        print(_json_doc({"folder": folder, "ok": not bad, "checkpoints": rows}))
    else:
        _print_ls(folder, rows, verify)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``ember`` command; returns the exit code (0 ok, 1 a file failed, 2 usage error)."""
    global _TRACEBACK
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    _TRACEBACK = args.traceback
    if args.command != "ckpt" or not args.action:
        parser.print_usage(sys.stderr)
        print("ember: error: use `ember ckpt inspect PATH`, `ember ckpt verify PATH...` or `ember ckpt ls DIR`",
              file=sys.stderr)
        return 2
    if args.action == "ls":
        return _ls_command(args.folder, args.verify, args.json)
    if args.action == "inspect":
        info, code = _inspect_safely(args.path, args.tensors)
        if args.json:
            print(_json_doc(info))
        else:
            _print_inspect(info)
        return code
    results = [(path, *_verify_safely(path)) for path in args.paths]
    if args.json:
        doc = {"ok": all(ok for _, ok, _ in results), "files": [{"path": p, "ok": ok, "detail": d} for p, ok, d in results]}
        print(_json_doc(doc))
    else:
        for path, ok, detail in results:
            _say(f"OK  {path}" if ok else f"FAIL {path}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
