"""``ember ckpt inspect PATH`` and ``ember ckpt verify PATH...``."""

from __future__ import annotations

from typing import Any

from ember.checkpoint.format import codec, container
from ember.checkpoint.format.torch_files import load_foreign, sniff
from ember.cli.folders import KIND, folder_header, is_folder, verify_folder
from ember.cli.text import OPTIONS, human, jsonable, key, plain, say, size, unexpected
from ember.errors import CheckpointError, UnsafeCheckpointError

_PARTS = (("weights", "state_dict."), ("optimizer", "optimizer_states."))
KINDS = {
    "ember": "ember checkpoint",
    "safetensors": "plain safetensors file (not written by ember)",
    "torch-zip": "torch.save file (zip)",
    "torch-pickle": "torch.save file (legacy pickle)",
    "ember-sharded": "ember sharded checkpoint folder",
}


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
        "epoch": jsonable(state.get("epoch")),
        "global_step": jsonable(state.get("global_step")),
        "tensor_count": len(hdr["tensors"]),
        "tensor_bytes": sum(i["nbytes"] for i in hdr["tensors"].values()),
        "parts": parts,
        "dtypes": sorted(dtypes),
        "hyper_parameters": jsonable(state.get("hyper_parameters")),
        "callbacks": [key(k) for k in callbacks] if isinstance(callbacks, dict) else jsonable(callbacks),
        "keys": [key(k) for k in state],
    }
    if with_tensors:
        out["tensors"] = tensors
    return out


def _inspect_folder(path: str, with_tensors: bool) -> tuple[dict, int]:
    try:
        hdr = folder_header(path)
    except CheckpointError as e:
        return {"path": path, "kind": KIND, "error": str(e)}, 1
    info = _summarise_header(hdr, with_tensors)
    info["ranks"], info["rank_files"] = hdr["ranks"], hdr["rank_files"]
    ok, detail = verify_folder(path)
    info["checksums"] = {"status": "ok" if ok else "failed", "reason": detail}
    return info, 0 if ok else 1


def _inspect(path: str, with_tensors: bool) -> tuple[dict, int]:
    if is_folder(path):
        return _inspect_folder(path, with_tensors)
    try:
        kind = sniff(path)
    except OSError as e:
        return {"path": path, "kind": None, "error": f"cannot open: {e.strerror or e}"}, 1
    if kind in ("ember", "safetensors"):
        try:
            info = _summarise_header(container.read_header(path), with_tensors)
        except CheckpointError as e:
            return {"path": path, "kind": kind, "error": str(e), "checksums": {"status": "failed", "reason": str(e)}}, 1
        if info["kind"] != "ember":
            info["checksums"] = {"status": "unavailable", "reason": "plain safetensors files carry no checksums"}
            return info, 0
        try:
            container.verify_file(path)
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
    info["keys"] = [key(k) for k in state]
    info["epoch"] = jsonable(state.get("epoch"))
    info["global_step"] = jsonable(state.get("global_step"))
    return info, 0


def print_inspect(info: dict) -> None:
    def row(label: str, value: Any) -> None:
        say(f"{label:<13}{value}")

    row("checkpoint", info["path"])
    kind = KINDS.get(info.get("kind") or "", info.get("kind") or "unknown")
    if info.get("format_version"):
        kind += f", format {plain(info['format_version'])}, written by ember {plain(info['ember_version'])}"
    row("kind", kind)
    if "error" in info:
        row("error", info["error"])
        return
    if "note" in info:
        row("note", info["note"])
    for field, label in (("epoch", "epoch"), ("global_step", "global step")):
        if info.get(field) is not None:
            row(label, plain(info[field]))
    if "tensor_count" in info:
        row("tensors", f"{info['tensor_count']} tensors, {size(info['tensor_bytes'])}")
        for name, prefix in (*_PARTS, ("other", None)):
            part = info["parts"][name]
            where = f" ({prefix}*)" if prefix else ""
            row(f"  {name}", f"{part['count']} tensors, {size(part['bytes'])}{where}")
        row("dtypes", ", ".join(info["dtypes"]) or "-")
    hp = info.get("hyper_parameters")
    if isinstance(hp, dict):
        row("hparams", "" if hp else "-")
        for k, v in hp.items():
            say(f"  {k:<20} {human(v)}")
    elif hp is not None:
        row("hparams", plain(hp))
    if "callbacks" in info and info["callbacks"] is not None:
        callbacks = info["callbacks"]
        row("callbacks", ", ".join(map(str, callbacks)) if isinstance(callbacks, list) else plain(callbacks))
    if "ranks" in info:
        row("ranks", f"saved by {info['ranks']} ranks, {info['rank_files']} rank files")
    if "keys" in info:
        row("keys", ", ".join(info["keys"]))
    if "checksums" in info:
        c = info["checksums"]
        status = {"ok": "verified OK", "failed": "FAILED", "unavailable": "not available"}[c["status"]]
        row("checksums", f"{status} ({c['reason']})")
    for t in info.get("tensors", []):
        say(f"  {t['name']}  {tuple(t['shape'])}  {t['dtype']}  {size(t['bytes'])}")


def inspect_safely(path: str, with_tensors: bool) -> tuple[dict, int]:
    try:
        return _inspect(path, with_tensors)
    except Exception as e:  # a hostile file must not end in a traceback
        if OPTIONS["traceback"]:
            raise
        return {"path": path, "kind": None, "error": unexpected(path, e)}, 1


def verify_safely(path: str) -> tuple[bool, str]:
    try:
        return _verify(path)
    except Exception as e:  # a hostile file must not end in a traceback
        if OPTIONS["traceback"]:
            raise
        return False, unexpected(path, e)


def _verify(path: str) -> tuple[bool, str]:
    if is_folder(path):
        return verify_folder(path)
    try:
        kind = sniff(path)
    except FileNotFoundError:
        return False, "no such file"
    except OSError as e:
        return False, f"cannot open: {e.strerror or e}"
    if kind not in ("ember", "safetensors"):
        what = KINDS.get(kind, "not a checkpoint")
        return False, f"not an ember checkpoint ({what}); only ember checkpoints carry checksums"
    try:
        container.verify_file(path)
    except CheckpointError as e:
        return False, str(e)
    return True, "every byte verified"
