"""One load pipeline for every entry point: fit, validate/test/predict and ``load_from_checkpoint``.

    locate   ``ckpt_path`` -> a location: a path or URL, ``"last"``, ``"best"``, ``"hpc"``, a sharded folder
    read     the location -> ember's checkpoint dict: ember files, ``torch.save`` files (weights-only),
             Lightning ``.ckpt`` files translated, sharded folders whole (or resharded into a run)
    check    the dict fits what it goes into: a run to resume, or a module's weights
    restore  into the run (fit), into the module's weights (evaluation), or into a new module

Every entry point resolves the same ``ckpt_path`` to the same location, from the same default folder.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from ember.checkpoint import state as run_state
from ember.checkpoint.io import load_from
from ember.checkpoint.lightning import is_lightning, to_ember
from ember.checkpoint.lookup import find_last
from ember.checkpoint.manager import CheckpointManager
from ember.checkpoint.sharded import full as sharded
from ember.checkpoint.sharded import objects as sharded_objects
from ember.checkpoint.storage.locations import open_store, resolve
from ember.errors import CheckpointError, CheckpointMismatchError, CheckpointNotFoundError, MisconfigurationError

__all__ = ["Place", "locate", "locate_path", "read", "restore_weights", "resume"]

_HPC = re.compile(r"hpc_ckpt_(\d+)\.ckpt")


@dataclass(frozen=True)
class Place:
    """Where a run's checkpoints are: its managers' stores, and the default folder (``dirpath`` unset).

    Args:
        managers: the run's checkpoint managers (``ModelCheckpoint.manager``), in callback order.
        default_dir: the folder checkpoints go to when a ``ModelCheckpoint`` has no ``dirpath``.
        root_dir: ``default_root_dir``, where ``"hpc"`` checkpoints are looked for.
        storage_options: options for the backend of a URL (credentials, endpoint).
    """

    managers: Sequence[CheckpointManager]
    """The run's checkpoint managers (``ModelCheckpoint.manager``), in callback order."""
    default_dir: str
    """The folder checkpoints go to when a ``ModelCheckpoint`` has no ``dirpath``."""
    root_dir: str
    """``default_root_dir``: where ``"hpc"`` checkpoints are looked for."""
    storage_options: dict | None = None
    """Options for the backend of a URL (credentials, endpoint)."""
    earlier_dirs: Sequence[str] = ()
    """Default folders of earlier runs (each process logs to a new ``version_N``), newest first: ``"last"``
    looks there when this run's folders hold nothing, so a restarted job resumes."""


def locate(ckpt_path: Any, place: Place, *, entry: str = "fit") -> str | None:
    """The location ``ckpt_path`` names; None for ``None``, and for ``"last"`` when nothing is saved yet
    (with a warning: nothing is loaded). ``entry`` names the caller in messages (``fit``, ``validate``...).

    Raises ``CheckpointNotFoundError`` (a ``FileNotFoundError``) for a path that holds no checkpoint, and
    ``MisconfigurationError`` for ``"best"``/``"hpc"`` with nothing to point at.

    Args:
        ckpt_path: None, ``"last"``, ``"best"``, ``"hpc"``, or a path or URL.
        place: where the run's checkpoints are.
        entry: the calling Trainer method, for messages.
    """
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        return _last(place, entry)
    if ckpt_path == "best":
        return _best(place, entry)
    if ckpt_path == "hpc":
        return _hpc(place, entry)
    return locate_path(ckpt_path, place.storage_options)


def locate_path(location: Any, storage_options: dict | None = None) -> str:
    """``location`` (a path or URL, never a keyword) if a checkpoint is there: a file, or a complete sharded
    folder. ``CheckpointNotFoundError`` (a ``FileNotFoundError``) if nothing is; ``CheckpointError`` for a
    folder that holds no checkpoint.

    Args:
        location: a path (str or ``os.PathLike``) or URL.
        storage_options: options for the backend of a URL.
    """
    location = os.fspath(location)
    store, name = resolve(location, storage_options)
    if store.exists(name):
        return location
    local = store.local_path(name)
    if local is None and sharded_objects.committed(store, name):
        return location  # a sharded folder in an object store
    if local is not None and local.is_dir():
        if sharded.is_sharded_checkpoint(local):
            return location
        raise CheckpointError(f"cannot load {location}: it is a folder, not a checkpoint (no complete sharded "
                              "checkpoint in it either). Pass a checkpoint inside it, or ckpt_path='last' to pick "
                              "the newest one.")
    raise CheckpointNotFoundError(
        f"cannot load {location}: no such file. Pass an existing checkpoint, 'last' or 'best'.")


def _last(place: Place, entry: str) -> str | None:
    stores = {m.store.describe(): m.store for m in place.managers if m.store is not None}
    for folder in (place.default_dir, *place.earlier_dirs):
        default = open_store(folder, place.storage_options)
        stores.setdefault(default.describe(), default)
        found = find_last(list(stores.values()))
        if found is not None:
            break
    if found is None:
        warnings.warn(f"{entry}(ckpt_path='last') found no checkpoint in {', '.join(stores)}: nothing is loaded"
                      + (" and a fresh run starts." if entry == "fit" else "."), stacklevel=4)
        return None
    return found[0].describe(found[1])


def _best(place: Place, entry: str) -> str:
    """The best checkpoint of the first ``ModelCheckpoint`` (with a monitor: the best score; without: the
    newest it saved), as Lightning's ``trainer.checkpoint_callback.best_model_path``."""
    if not place.managers:
        raise MisconfigurationError(f"{entry}(ckpt_path='best') needs a ModelCheckpoint; the Trainer has none "
                                    "(enable_checkpointing=False?). Pass the checkpoint's path instead.")
    manager = place.managers[0]
    if manager.best is None:
        raise MisconfigurationError(f"{entry}(ckpt_path='best'): the ModelCheckpoint has saved no checkpoint in "
                                    "this Trainer yet; fit first, or pass the checkpoint's path.")
    return manager.location(manager.best.name)


def _hpc(place: Place, entry: str) -> str:
    """The highest-numbered ``hpc_ckpt_N.ckpt`` in ``default_root_dir`` (Lightning's SLURM requeue files)."""
    store = open_store(place.root_dir, place.storage_options)
    numbered = [(int(m.group(1)), n) for n in store.list("") if (m := _HPC.fullmatch(n))]
    if not numbered:
        raise MisconfigurationError(f"{entry}(ckpt_path='hpc') found no hpc_ckpt_N.ckpt in {store.describe()}; "
                                    "pass an exact checkpoint path.")
    return store.describe(max(numbered)[1])


def read(location: str, *, storage_options: dict | None = None, map_location: Any = "cpu",
         reshard_into: Any = None, resuming: bool = False) -> dict:
    """Ember's checkpoint dict at ``location``, whatever wrote it. ``reshard_into`` (the run's sharded state,
    FSDP) makes a sharded folder load shard by shard into it, each rank reading only its own part.
    ``resuming``: a Lightning file saved mid-epoch warns that its remaining batches come from a new pass.

    Args:
        location: the checkpoint's path or URL (from ``locate``).
        storage_options: options for the backend of a URL.
        map_location: the device tensors go to (default "cpu"), a str or a ``torch.device``.
        reshard_into: the run's sharded state to load a sharded folder into, or None to read it whole.
        resuming: True when the dict resumes a run (keeps the mid-epoch warning of Lightning files).
    """
    if reshard_into is not None and (sharded.is_sharded_checkpoint(location)
                                     or sharded_objects.is_sharded_at_url(location, storage_options)):
        from ember.checkpoint.sharded import load_sharded  # deferred: imports torch.distributed.checkpoint

        return load_sharded(reshard_into, location, storage_options=storage_options)
    ckpt = load_from(*resolve(location, storage_options), map_location=map_location)
    if not is_lightning(ckpt):
        return ckpt
    with warnings.catch_warnings():
        if not resuming:  # only the weights are used: where the epoch stopped does not matter
            warnings.filterwarnings("ignore", message=".*part-way through epoch")
        out = to_ember(ckpt, path=location)
    if not resuming and "hyper_parameters" in ckpt:  # a module built from them gets them as Lightning saved them
        out["hyper_parameters"] = ckpt["hyper_parameters"]
    return out


def restore_weights(module: Any, ckpt: dict, location: str, *, datamodule: Any = None, strict: bool = True,
                    load: Callable[[Any, dict], None] | None = None) -> None:
    """The module's weights (and the datamodule's state) from ``ckpt``, after ``module.on_load_checkpoint``.

    Args:
        module: the LightningModule to load into (unwrapped).
        ckpt: the checkpoint dict (from ``read``).
        location: where it was read from, for messages.
        datamodule: the run's datamodule, whose state is restored too (None: none).
        strict: every key must match (False: load the keys that match, warn about the others).
        load: loads ``(module, state_dict)`` instead of ``load_state_dict`` (a sharded module: every rank
            takes its shards, ``FSDPStrategy.load_weights``).
    """
    module.on_load_checkpoint(ckpt)
    if "state_dict" not in ckpt:
        raise CheckpointMismatchError(f"{location} holds no model weights (no 'state_dict' entry); "
                                      f"it has {sorted(ckpt)}.")
    if load is not None:
        load(module, ckpt["state_dict"])
    else:
        run_state.load_weights(module, ckpt["state_dict"], strict=strict, source=location)
    run_state.restore_datamodule(datamodule, ckpt)


def resume(run: run_state.RunState, ckpt: dict, location: str, *, trainer: Any, module: Any, datamodule: Any,
           callbacks: Sequence[Any], adapt: Callable[[dict], dict] = lambda c: c,
           load_sharded_state: Callable | None = None) -> None:
    """The whole run from ``ckpt``: checked first (nothing is changed if it cannot be resumed), then the callbacks'
    state (a ``BaseFinetuning`` puts back its param groups), the module, optimizers, schedulers, scaler, loop
    position and RNG. ``adapt`` puts optimizer states in the layout the run loads (numbered, or named under
    FSDP), once the callbacks have put back their param groups.

    Args:
        run: the run's state (module, optimizers, schedulers, scaler, loops) to restore into.
        ckpt: ember's checkpoint dict (from ``read``).
        location: where ``ckpt`` came from, for messages.
        trainer: the Trainer, passed to each callback's ``on_load_checkpoint``.
        module: the LightningModule; its ``on_load_checkpoint`` runs first.
        datamodule: the LightningDataModule whose saved state is restored, or None.
        callbacks: the callbacks whose ``on_load_checkpoint`` runs last.
        adapt: turns ``ckpt`` into the layout the run loads (default: unchanged).
        load_sharded_state: loads a sharded (FSDP) model and optimizer state, or None.
    """
    run_state.check_resumable(ckpt, location, run)
    module.on_load_checkpoint(ckpt)
    # the callbacks' state first, as Lightning: BaseFinetuning puts back the param groups it added, which the
    # optimizer states need before they are put in this run's layout (FSDP pairs them by name) and loaded
    run_state.restore_callbacks(run.callbacks, ckpt.get("callbacks") or {}, location)
    run_state.check_param_groups(ckpt, location, run)
    run_state.restore(replace(run, callbacks={}), {**adapt(ckpt), "callbacks": {}}, location, load_sharded_state)
    run_state.restore_datamodule(datamodule, ckpt)
    for cb in callbacks:
        cb.on_load_checkpoint(trainer, module, ckpt)
