"""Callback state in Lightning's ``.ckpt`` layout and in ember's, both ways: ``ModelCheckpoint``
(Lightning keys it ``ModelCheckpoint{'monitor': ..., 'mode': ..., ...}``, ember
``ModelCheckpoint[monitor:mode]``) and ``EarlyStopping`` (``EarlyStopping{'monitor': ..., 'mode': ...}``
and ``EarlyStopping[monitor:mode]``); other callbacks' state is carried as it is."""

from __future__ import annotations

import ast
import os
import re
from collections import OrderedDict
from typing import Any, Mapping

import torch

def _lightning_key_fields(key: str, cls: str) -> dict | None:
    """The fields in a Lightning state key ``Class{'monitor': ..., ...}``, or None if it is not one."""
    if key == cls:
        return {}
    if not key.startswith(cls + "{"):
        return None
    try:
        fields = ast.literal_eval(key[len(cls):])
    except (ValueError, SyntaxError):
        return None
    return fields if isinstance(fields, dict) else None


def callbacks_to_ember(states: Mapping) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, state in states.items():
        stopping = _lightning_key_fields(key, "EarlyStopping") if isinstance(key, str) else None
        if stopping is not None and isinstance(state, Mapping) and "monitor" in stopping:
            ember_key = f"EarlyStopping[{stopping['monitor']}:{stopping.get('mode', 'min')}]"
            out[ember_key if ember_key not in out else key] = _early_stopping(state, float)
            continue
        fields = _lightning_key_fields(key, "ModelCheckpoint") if isinstance(key, str) else None
        if fields is None or not isinstance(state, Mapping):
            out[key] = plain(state)
            continue
        monitor = fields.get("monitor", state.get("monitor"))
        mode = fields.get("mode", "min")
        ember_key = "ModelCheckpoint" if monitor is None else f"ModelCheckpoint[{monitor}:{mode}]"
        if ember_key in out:  # two Lightning callbacks that ember would key alike: keep the second as it was
            out[key] = plain(state)
            continue
        out[ember_key] = _model_checkpoint_to_ember(state, monitor, mode)
    return out


def _early_stopping(state: Mapping, score: Any) -> dict[str, Any]:
    """EarlyStopping's state (the same four entries in both libraries; Lightning keeps the score as a tensor)."""
    out = {k: plain(v) for k, v in state.items()}
    if state.get("best_score") is not None:
        out["best_score"] = score(_score(state["best_score"]))
    return out


def _score(v: Any) -> float | None:
    if v is None:
        return None
    return float(v.item() if isinstance(v, torch.Tensor) else v)


_STEP_IN_NAME = re.compile(r"(?:^|[-_])step=(\d+)")
_EPOCH_IN_NAME = re.compile(r"(?:^|[-_])epoch=(\d+)")


def _model_checkpoint_to_ember(state: Mapping, monitor: str | None, mode: str) -> dict[str, Any]:
    """Lightning's ModelCheckpoint state in the layout of ember's ``CheckpointManager.state_dict``."""
    dirpath = state.get("dirpath")
    scored = {p: _score(s) for p, s in (state.get("best_k_models") or {}).items()}
    if not scored and state.get("best_model_path"):  # no monitor: Lightning tracks only the newest file
        scored = {state["best_model_path"]: None}

    def record(p: str, score: float | None) -> dict[str, Any]:
        name = os.path.basename(p)
        epoch, step = _EPOCH_IN_NAME.search(name), _STEP_IN_NAME.search(name)
        return {"name": name, "epoch": int(epoch.group(1)) if epoch else -1,
                "global_step": int(step.group(1)) if step else -1, "score": score if monitor else None}

    inside = {p: s for p, s in scored.items() if dirpath is None or os.path.dirname(p) == dirpath}
    last = state.get("last_model_path") or ""
    return {
        "monitor": monitor,
        "mode": mode,
        "dirpath": dirpath,
        "checkpoints": [record(p, s) for p, s in inside.items()],
        "last": os.path.basename(last) if last else None,
        "current_score": _score(state.get("current_score")),
        "best_model_path": state.get("best_model_path") or "",
        "best_model_score": _score(state.get("best_model_score")),
        "kth_best_model_path": state.get("kth_best_model_path") or "",
        "best_k_models": dict(scored) if monitor else {},
    }


def plain(v: Any) -> Any:
    """``v`` with every dict subclass (AttributeDict) as a plain dict, which ember files can hold."""
    t = type(v)
    if isinstance(v, dict) and t not in (dict, OrderedDict):
        return {k: plain(x) for k, x in v.items()}
    if t is dict:
        return {k: plain(x) for k, x in v.items()}
    if t is list:
        return [plain(x) for x in v]
    if t is tuple:
        return tuple(plain(x) for x in v)
    return v


# ----------------------------------------------------------------------------- ember -> Lightning


def callbacks_to_lightning(states: Mapping) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, state in states.items():
        stopping = re.fullmatch(r"EarlyStopping\[(.+):(min|max)\]", key) if isinstance(key, str) else None
        if stopping is not None and isinstance(state, Mapping):
            out["EarlyStopping{" + f"'monitor': {stopping.group(1)!r}, 'mode': {stopping.group(2)!r}" + "}"] = \
                _early_stopping(state, _tensor)
            continue
        m = re.fullmatch(r"ModelCheckpoint(?:\[(.+):(min|max)\])?", key) if isinstance(key, str) else None
        if m is None or not isinstance(state, Mapping):
            out[key] = state
            continue
        monitor, mode = m.group(1), m.group(2) or state.get("mode") or "min"
        lkey = ("ModelCheckpoint{" + f"'monitor': {monitor!r}, 'mode': {mode!r}, 'every_n_train_steps': 0, "
                "'every_n_epochs': 1, 'train_time_interval': None}")
        out[lkey] = _model_checkpoint_to_lightning(state, monitor, mode)
    return out


def _tensor(score: Any) -> torch.Tensor | None:
    return None if score is None else torch.tensor(float(score))


def _model_checkpoint_to_lightning(state: Mapping, monitor: str | None, mode: str) -> dict[str, Any]:
    """ember's ModelCheckpoint state as Lightning's ModelCheckpoint keeps it (scores as tensors)."""
    dirpath = state.get("dirpath")
    kth = state.get("kth_best_model_path") or ""
    best_k = {p: _tensor(s) for p, s in (state.get("best_k_models") or {}).items()} if monitor else {}
    worst = torch.tensor(float("inf") if mode == "min" else float("-inf"))
    last = state.get("last")
    return {
        "monitor": monitor,
        "best_model_score": _tensor(state.get("best_model_score")),
        "best_model_path": state.get("best_model_path") or "",
        "current_score": _tensor(state.get("current_score")),
        "dirpath": dirpath,
        "best_k_models": best_k,
        "kth_best_model_path": kth if monitor else "",
        "kth_value": best_k.get(kth, worst) if monitor and kth else worst,
        "last_model_path": _join(dirpath, last) if last and dirpath else "",
    }


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else os.path.join(folder, name)
