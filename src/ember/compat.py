"""Old names, translated in one place.

The seed page (Lightning 0.x) and ember 0.1 spelled some things differently; each old spelling
is turned into today's here, so the rest of ember knows only one name for each thing:

- ``Trainer(default_save_path=)`` -> ``default_root_dir``
- ``Trainer(checkpoint_callback=ModelCheckpoint | True | False)`` -> ``callbacks`` / ``enable_checkpointing``
- ``Trainer(resume_from_checkpoint=)`` -> ``fit(ckpt_path=)``
- ``ModelCheckpoint(filepath=, prefix=)`` -> ``dirpath`` + ``filename``
- a ``validation_step`` that returns a dict of scalars -> ``self.log(name, value, on_epoch=True)``
- ``PL_GLOBAL_SEED``, the environment variable ``seed_everything`` sets
- callback state keys written by ember 0.1 (``ModelCheckpoint{'monitor': ..., ...}``)
"""

from __future__ import annotations

import ast
import os
from typing import Any, Iterable

import torch

from ember.errors import MisconfigurationError

GLOBAL_SEED_ENV = "PL_GLOBAL_SEED"
EXTENSION = ".ckpt"  # every checkpoint's name ends so (files and sharded folders)


def root_dir(default_root_dir: Any, default_save_path: Any) -> str:
    """``default_root_dir`` or its old name; the working directory when neither is given."""
    if default_save_path is not None and default_root_dir is not None:
        raise MisconfigurationError("give default_root_dir or its old name default_save_path, not both.")
    root = default_root_dir if default_root_dir is not None else default_save_path
    return os.fspath(root) if root is not None else os.getcwd()


def checkpoint_callbacks(enable_checkpointing: bool, checkpoint_callback: Any, callbacks: list,
                         checkpoint_class: type) -> tuple[list, bool]:
    """Fold the old ``checkpoint_callback=`` into the callback list; returns (callbacks, enabled)."""
    out = list(callbacks)
    if isinstance(checkpoint_callback, checkpoint_class):
        out.append(checkpoint_callback)
    elif checkpoint_callback not in (None, True, False):
        raise MisconfigurationError(
            f"checkpoint_callback must be a ModelCheckpoint, True or False; received {checkpoint_callback!r}.")
    return out, bool(enable_checkpointing) and checkpoint_callback is not False


def resume_path(ckpt_path: Any, resume_from_checkpoint: Any) -> Any:
    if ckpt_path is not None and resume_from_checkpoint is not None:
        raise MisconfigurationError(
            "both Trainer(resume_from_checkpoint=...) and fit(ckpt_path=...) were given; use one "
            "(fit(ckpt_path=...) is the current name).")
    return ckpt_path if ckpt_path is not None else resume_from_checkpoint


def split_filepath(filepath: Any, dirpath: Any, filename: str | None) -> tuple[Any, str | None]:
    """The seed's ``filepath``: a folder, or a folder plus a file-name template (ends in .ckpt or holds {...})."""
    if filepath is None:
        return dirpath, filename
    if dirpath is not None or filename is not None:
        raise MisconfigurationError(
            "ModelCheckpoint got filepath together with dirpath/filename; give filepath (the old name) "
            "or dirpath and filename, not both.")
    text = os.fspath(filepath).rstrip("/")
    folder, sep, name = text.rpartition("/")
    if name.endswith(EXTENSION) or ("{" in name and "}" in name):
        return (folder if sep else "."), name
    return text, None


def validation_outputs(out: Any) -> dict[str, Any]:
    """The old style: a ``validation_step`` returning a dict of scalars feeds epoch means."""
    if not isinstance(out, dict):
        return {}
    return {k: v for k, v in out.items()
            if (isinstance(v, torch.Tensor) and v.numel() == 1)
            or (isinstance(v, (int, float)) and not isinstance(v, bool))}


def legacy_state_key(saved_keys: Iterable[str], callback: Any) -> str | None:
    """The key under which ember 0.1 saved ``callback``'s state: ``Class{'monitor': m, 'mode': x, ...}``.

    Matched on the class name and, where the callback has them, on ``monitor`` and ``mode``."""
    cls = type(callback).__qualname__
    for key in saved_keys:
        if not key.startswith(cls + "{"):
            continue
        try:
            fields = ast.literal_eval(key[len(cls):])
        except (ValueError, SyntaxError):
            continue
        if not isinstance(fields, dict):
            continue
        if all(fields.get(k) == getattr(callback, k)
               for k in ("monitor", "mode") if k in fields and hasattr(callback, k)):
            return key
    return None
