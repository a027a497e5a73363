"""``ember ckpt ls DIR|URL``: one line per checkpoint in a folder or a store, from headers only."""

from __future__ import annotations

import datetime
import math
import os
import sys
import time
from typing import Any

from ember.checkpoint.format import codec, container
from ember.checkpoint.format.torch_files import sniff
from ember.checkpoint.storage.locations import Storage, open_store
from ember.checkpoint.storage.temporaries import TMP_PREFIX
from ember.cli.folders import KIND, folder_header
from ember.cli.inspect import verify_safely
from ember.cli.text import OPTIONS, escape, json_doc, jsonable, plain, say, size, unexpected
from ember.errors import CheckpointError


def _entries(store: Storage) -> list[tuple[str, str]]:
    """(name, "file" | "folder") for each checkpoint directly in ``store``: ``*.ckpt`` files, and
    ``*.ckpt`` folders (sharded checkpoints; one without its metadata, written last, is listed to be
    reported as incomplete). Temporaries of saves in progress are never listed by a store."""
    out, folders = [], set()
    for name in store.list(""):
        head, slash, rest = name.partition("/")
        if head.startswith(TMP_PREFIX):
            continue
        if not slash:
            if name.endswith(".ckpt"):
                out.append((name, "file"))
        elif head.endswith(".ckpt") and "/" not in rest and head not in folders:
            folders.add(head)
            out.append((head, "folder"))
    return out


def _own_score(state: dict, path: str) -> tuple[bool, Any]:
    """This file's score as a ModelCheckpoint state lists it (by full path, or by name when the folder
    was moved): (found, score)."""
    name = path.rstrip("/").rpartition("/")[2]
    listed = state.get("best_k_models")
    if isinstance(listed, dict):
        for p, score in listed.items():
            if isinstance(p, str) and (p == path or p.replace("\\", "/").rpartition("/")[2] == name):
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
        state = codec.unflatten(container.read_header(path)["tree"], None)
    except CheckpointError as e:
        row["error"] = str(e)
        return row
    row["epoch"] = jsonable(state.get("epoch"))
    row["global_step"] = jsonable(state.get("global_step"))
    row["monitor"], score = _monitored(state.get("callbacks"), path)
    row["score"] = jsonable(score)
    return row


def _ls_folder(path: str) -> dict:
    """epoch, step, monitored metric, size and mtime of a sharded folder, from its metadata only."""
    row: dict[str, Any] = {"format": KIND}
    try:
        hdr = folder_header(path)
    except CheckpointError as e:
        row["error"] = str(e)
        return row
    state = codec.unflatten(hdr["tree"], None)
    row["epoch"] = jsonable(state.get("epoch"))
    row["global_step"] = jsonable(state.get("global_step"))
    row["monitor"], score = _monitored(state.get("callbacks"), path)
    row["score"] = jsonable(score)
    row["mtime"] = hdr["mtime"]
    return row


def _ls_entry(store: Storage, name: str, what: str, verify: bool) -> dict:
    path = store.describe(name)
    row: dict[str, Any] = {"name": name, "path": path, "kind": what, "format": None, "epoch": None,
                           "global_step": None, "monitor": None, "score": None, "size": None, "mtime": None}
    try:
        if what == "folder":
            row["size"] = sum(store.stat(n).size for n in store.list(name + "/"))
            row.update(_ls_folder(path))  # in an object store: its metadata object alone is read
        else:
            info = store.stat(name)
            row["size"], row["mtime"] = info.size, info.mtime
            row.update(_ls_file(path))
    except OSError as e:
        row["error"] = f"cannot read: {e.strerror or e}"
    except Exception as e:  # a hostile file must not end the listing
        if OPTIONS["traceback"]:
            raise
        row["error"] = unexpected(path, e)
    if row["mtime"] is not None:
        row["modified"] = datetime.datetime.fromtimestamp(row["mtime"], datetime.timezone.utc).isoformat()
    if verify:
        if "error" in row:
            row["verified"] = {"ok": False, "detail": row["error"]}
        elif what == "folder" and store.local_path(name) is None:
            row["verified"] = {"ok": None, "detail": "not checked: sharded checkpoints are verified in local folders"}
        else:
            ok, detail = verify_safely(path)
            row["verified"] = {"ok": ok, "detail": detail}
    return row


def _ls_order(row: dict) -> tuple:
    """By global step, then modification time; rows without a readable step last."""
    step = row["global_step"]
    known = isinstance(step, int) and not isinstance(step, bool)
    return (not known, step if known else 0, row["mtime"] or 0.0, row["name"])


def _ls(store: Storage, verify: bool) -> list[dict]:
    rows = [_ls_entry(store, name, what, verify) for name, what in _entries(store)]
    return sorted(rows, key=_ls_order)


def _metric_text(row: dict) -> str:
    if row["monitor"] is None:
        return "-"
    score = row["score"]
    if isinstance(score, float) and math.isfinite(score):
        value = f"{score:.6g}"
    else:
        value = "?" if score is None else plain(score)
    return f"{row['monitor']}={value}"


def _print_ls(folder: str, rows: list[dict], verify: bool) -> None:
    if not rows:
        say(f"no checkpoints in {folder}")
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
            escape(r["name"]),
            "-" if r["epoch"] is None else escape(plain(r["epoch"])),
            "-" if r["global_step"] is None else escape(plain(r["global_step"])),
            escape(_metric_text(r)),
            "-" if r["size"] is None else size(r["size"]),
            "-" if r["mtime"] is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["mtime"])),
            status,
        ))
    widths = [max(len(line[i]) for line in table) for i in range(6)]
    right = (False, True, True, False, True, False)
    for line in table:
        cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right)]
        say("  ".join([*cells, line[6]]).rstrip())


def ls_command(folder: str, verify: bool, as_json: bool) -> int:
    """``ember ckpt ls``: 0 listed, 1 a checkpoint failed --verify, 2 no such folder."""
    if "://" not in folder and not os.path.isdir(folder):
        why = ("it is a file; `ember ckpt inspect` reads one checkpoint" if os.path.exists(folder)
               else "it does not exist")
        print(escape(f"ember: error: no folder at {folder}: {why}. Pass the folder that holds the .ckpt files."),
              file=sys.stderr)
        return 2
    try:
        store = open_store(folder)
        rows = _ls(store, verify)
    except (OSError, ValueError, CheckpointError) as e:  # an unreachable store, a missing bucket
        print(escape(f"ember: error: cannot list {folder}: {getattr(e, 'strerror', None) or e}"), file=sys.stderr)
        return 2
    bad = any(r.get("verified", {}).get("ok") is False for r in rows)
    if as_json:
        print(json_doc({"folder": folder, "ok": not bad, "checkpoints": rows}))
    else:
        _print_ls(folder, rows, verify)
    return 1 if bad else 0
