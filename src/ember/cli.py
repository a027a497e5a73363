"""The ``ember`` command line: ``ember ckpt inspect PATH`` and ``ember ckpt verify PATH...``."""

from __future__ import annotations

import argparse
import json
import math
import sys
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


def _jsonable(v: Any) -> Any:
    """Plain JSON for --json output: containers become lists/objects, everything else its repr."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
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
        "callbacks": [str(k) for k in callbacks] if isinstance(callbacks, dict) else _jsonable(callbacks),
        "keys": [str(k) for k in state],
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
    info["keys"] = [str(k) for k in state]
    info["epoch"] = _jsonable(state.get("epoch"))
    info["global_step"] = _jsonable(state.get("global_step"))
    return info, 0


def _print_inspect(info: dict) -> None:
    def row(label: str, value: Any) -> None:
        print(f"{label:<13}{value}")

    row("checkpoint", info["path"])
    kind = _KINDS.get(info.get("kind") or "", info.get("kind") or "unknown")
    if info.get("format_version"):
        kind += f", format {info['format_version']}, written by ember {info['ember_version']}"
    row("kind", kind)
    if "error" in info:
        row("error", info["error"])
        return
    if "note" in info:
        row("note", info["note"])
    for key, label in (("epoch", "epoch"), ("global_step", "global step")):
        if info.get(key) is not None:
            row(label, info[key])
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
            print(f"  {k:<20} {json.dumps(v)}")
    elif hp is not None:
        row("hparams", hp)
    if "callbacks" in info and info["callbacks"] is not None:
        row("callbacks", ", ".join(map(str, info["callbacks"])) or "-")
    if "keys" in info:
        row("keys", ", ".join(info["keys"]))
    if "checksums" in info:
        c = info["checksums"]
        status = {"ok": "verified OK", "failed": "FAILED", "unavailable": "not available"}[c["status"]]
        row("checksums", f"{status} ({c['reason']})")
    for t in info.get("tensors", []):
        print(f"  {t['name']}  {tuple(t['shape'])}  {t['dtype']}  {_size(t['bytes'])}")


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ember", description="ember command line tools")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    ckpt = sub.add_parser("ckpt", help="inspect and verify checkpoints").add_subparsers(dest="action", metavar="ACTION")
    ins = ckpt.add_parser("inspect", help="summarise a checkpoint (verifies its checksums)")
    ins.add_argument("path")
    ins.add_argument("--tensors", action="store_true", help="list every tensor's name, shape and dtype")
    ins.add_argument("--json", action="store_true", help="print one JSON document")
    ver = ckpt.add_parser("verify", help="check every byte of checkpoints against their checksums")
    ver.add_argument("paths", nargs="+", metavar="PATH")
    ver.add_argument("--json", action="store_true", help="print one JSON document")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the ``ember`` command; returns the exit code (0 ok, 1 a file failed, 2 usage error)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if args.command != "ckpt" or not args.action:
        parser.print_usage(sys.stderr)
        print("ember: error: use `ember ckpt inspect PATH` or `ember ckpt verify PATH...`", file=sys.stderr)
        return 2
    if args.action == "inspect":
        info, code = _inspect(args.path, args.tensors)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_inspect(info)
        return code
    results = [(path, *_verify(path)) for path in args.paths]
    if args.json:
        doc = {"ok": all(ok for _, ok, _ in results), "files": [{"path": p, "ok": ok, "detail": d} for p, ok, d in results]}
        print(json.dumps(doc, indent=2))
    else:
        for path, ok, detail in results:
            print(f"OK  {path}" if ok else f"FAIL {path}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
