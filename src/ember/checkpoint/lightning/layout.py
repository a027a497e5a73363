"""PyTorch Lightning ``.ckpt`` layouts, both ways, without importing Lightning.

Reading Lightning's pickles safely is ``lightning_pickles.py``; converting files is ``convert.py``.
Here: ``to_ember`` turns a Lightning checkpoint dict into the dict ember resumes from (the layout in
``state.py``'s docstring), ``to_lightning`` the other way. What each Lightning field means was learnt
by saving and resuming real Lightning 2.6 runs:

* ``epoch`` is ``trainer.current_epoch`` when the file was saved: the epoch being trained, also in
  a save from ``on_train_epoch_end``; after ``fit`` returns it is the number of epochs trained.
* ``loops.fit_loop.epoch_progress.current`` (ready / started / processed / completed) tells which:
  ``processed > completed`` is a save at an epoch's end (Lightning resumes with the next epoch),
  ``started > processed`` a save part-way through an epoch, ``started == completed`` a save between
  epochs (after fit). ``epoch_loop.batch_progress.current.processed`` is the number of batches of
  that epoch already trained: Lightning resumes at that batch index, taking the remaining batches
  from a fresh pass over the data loader (it does not record the sampler's position).
* ``global_step`` is the number of optimizer steps
  (``epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.completed``).
* Callback state is keyed by ``Class{'monitor': ..., 'mode': ..., ...}``; the GradScaler state is
  under the precision plugin's class name (``MixedPrecision``; ``native_amp_scaling_state`` before 2.0).
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any, Mapping

import torch

from ember.checkpoint.lightning.callbacks import callbacks_to_ember, callbacks_to_lightning, plain
from ember.checkpoint.format.unpickle import AttributeDict
from ember.errors import CheckpointError
from ember.version import __version__

__all__ = ["AttributeDict", "is_lightning", "to_ember", "to_lightning", "LIGHTNING_LAYOUT_VERSION"]

# The Lightning version whose checkpoint layout to_lightning writes (Lightning migrates files that
# say they are older, and reads this layout as it is).
LIGHTNING_LAYOUT_VERSION = "2.6.6"
VERSION_KEY = "pytorch-lightning_version"


# ----------------------------------------------------------------------------- Lightning -> ember


def is_lightning(ckpt: Any) -> bool:
    """Whether ``ckpt`` (a loaded checkpoint dict) was written by PyTorch Lightning."""
    return isinstance(ckpt, Mapping) and VERSION_KEY in ckpt


_LIGHTNING_KEYS = {"epoch", "global_step", VERSION_KEY, "legacy_pytorch-lightning_version", "state_dict", "loops",
                   "callbacks", "optimizer_states", "lr_schedulers", "hyper_parameters", "hparams_name",
                   "hparams_type", "MixedPrecision", "native_amp_scaling_state"}


def to_ember(ckpt: Mapping, *, path: Any = "the checkpoint") -> dict:
    """The ember checkpoint dict of a Lightning checkpoint dict (``is_lightning(ckpt)``).

    Weights, hyperparameters, optimizer, LR scheduler and GradScaler state carry over as they are;
    the position becomes ember's (``epoch``, ``global_step``, ``loops["fit"]``: ``batch``,
    ``epoch_done``) so that ember resumes where Lightning would: with the next epoch after a save at
    an epoch's end, at the same batch and global step after a save part-way through an epoch (the rest
    of that epoch's batches then come from a new pass over the data, as in Lightning; a warning says
    so). ``ModelCheckpoint`` state moves to ember's keys (``ModelCheckpoint`` without a monitor,
    ``ModelCheckpoint[monitor:mode]`` with one); other callbacks' state and keys ember does not know
    (a user's ``on_save_checkpoint`` entries) are kept as they are. A file saved with
    ``save_weights_only=True`` becomes an ember weights-only checkpoint.
    """
    if not is_lightning(ckpt):
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint: expected a {VERSION_KEY!r} entry; "
            f"found keys {sorted(map(str, ckpt))}.")
    if not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: a Lightning checkpoint must hold a 'state_dict' dict of weights; it has none.")
    out: dict[str, Any] = {"ember_version": __version__}
    full = "optimizer_states" in ckpt
    position = _ember_position(ckpt, path) if full else None
    out["epoch"] = position["epoch"] if position else _int(ckpt.get("epoch", 0), "epoch", path)
    out["global_step"] = _int(ckpt.get("global_step", 0), "global_step", path)
    out["state_dict"] = ckpt["state_dict"]
    if "hyper_parameters" in ckpt:
        hp = ckpt["hyper_parameters"]
        out["hyper_parameters"] = plain(dict(vars(hp)) if isinstance(hp, argparse.Namespace) else hp)
        out["hparams_type"] = "dict"
        out["hparams_name"] = ckpt.get("hparams_name")
    if full:
        out["optimizer_states"] = list(ckpt["optimizer_states"])
        out["lr_schedulers"] = list(ckpt.get("lr_schedulers") or [])
        out["callbacks"] = callbacks_to_ember(ckpt.get("callbacks") or {})
        scaler = ckpt.get("MixedPrecision", ckpt.get("native_amp_scaling_state"))
        if scaler:
            out["amp_scaling_state"] = dict(scaler)
        out["loops"] = {"fit": {"batch": position["batch"], "epoch_done": position["epoch_done"]}}
        if not position["epoch_done"] and position["batch"] > 0:
            warnings.warn(
                f"{path} was saved by Lightning part-way through epoch {position['epoch']} (after batch "
                f"{position['batch']}, global step {out['global_step']}). Training resumes there, but the "
                "remaining batches of that epoch come from a new pass over the data, not the order the "
                "interrupted run would have used: Lightning checkpoints do not record the sampler's position "
                "(Lightning itself resumes the same way).",
                stacklevel=2,
            )
    for k, v in ckpt.items():
        if k not in _LIGHTNING_KEYS and k not in out:
            out[k] = plain(v)
    return out


def _int(v: Any, what: str, path: Any) -> int:
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise CheckpointError(f"{path}: the Lightning checkpoint's {what} must be an int >= 0; found {v!r}.")
    return v


def _counts(tracker: Any, *path: str) -> dict[str, int]:
    for key in path:
        tracker = tracker.get(key) if isinstance(tracker, Mapping) else None
    return {k: int(v) for k, v in tracker.items()} if isinstance(tracker, Mapping) else {}


def _ember_position(ckpt: Mapping, path: Any) -> dict[str, Any]:
    """ember's epoch, batch and epoch_done for the point where Lightning would resume ``ckpt``."""
    fit = (ckpt.get("loops") or {}).get("fit_loop")
    if not isinstance(fit, Mapping) or "epoch_progress" not in fit:
        # Files from Lightning < 1.6 hold no loop progress: they were written at epoch ends.
        epoch = _int(ckpt.get("epoch", 0), "epoch", path)
        return {"epoch": epoch, "batch": 0, "epoch_done": True}
    ep = _counts(fit, "epoch_progress", "current")
    batches = _counts(fit, "epoch_loop.batch_progress", "current").get("processed", 0)
    started, processed, completed = ep.get("started", 0), ep.get("processed", 0), ep.get("completed", 0)
    if processed > completed:      # saved at the end of epoch `completed` (on_train_epoch_end)
        return {"epoch": completed, "batch": batches, "epoch_done": True}
    if started > completed:        # saved part-way through epoch `completed`
        return {"epoch": completed, "batch": batches, "epoch_done": False}
    if completed == 0:             # saved before the first epoch started
        return {"epoch": 0, "batch": 0, "epoch_done": False}
    return {"epoch": completed - 1, "batch": batches, "epoch_done": True}   # between epochs (after fit)


def _progress(n: int, *, completed: int | None = None, processed: int | None = None, four: bool = True) -> dict:
    out = {"ready": n, "completed": n if completed is None else completed}
    if four:
        out.update(started=n, processed=n if processed is None else processed)
    return out


def _tracker(current: dict, total: dict, is_last: bool | None = None) -> dict:
    out: dict[str, Any] = {"total": total, "current": current}
    if is_last is not None:
        out["is_last_batch"] = is_last
    return out


def _idle_loop(is_last: bool | None = False) -> dict:
    return {"state_dict": {}, "batch_progress": _tracker(_progress(0), _progress(0), is_last)}


def _lightning_loops(epoch: int, batch: int, global_step: int, epoch_done: bool) -> dict:
    """Lightning 2.x's ``loops`` for ember's position: the layout Lightning writes from
    ``on_train_epoch_end`` (epoch done) or between two batches (part-way)."""
    if epoch_done:   # epoch `epoch` trained and ended; Lightning goes on with epoch + 1
        epochs = _progress(epoch + 1, completed=epoch)
    else:            # epoch `epoch` started, `batch` batches of it trained
        epochs = _progress(epoch + 1, completed=epoch, processed=epoch)
    steps_now = min(batch, global_step)
    zeros = {"ready": 0, "completed": 0}
    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_loop.state_dict": {"_batches_that_stepped": global_step},
            "epoch_loop.batch_progress": _tracker(_progress(batch), _progress(max(global_step, batch)), epoch_done),
            "epoch_loop.scheduler_progress": _tracker(dict(zeros), dict(zeros)),
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
                "step": _tracker(_progress(steps_now, four=False), _progress(global_step, four=False)),
                "zero_grad": _tracker({"ready": steps_now, "completed": steps_now, "started": steps_now},
                                      {"ready": global_step, "completed": global_step, "started": global_step}),
            }},
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": _tracker(dict(zeros), dict(zeros)),
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": _tracker(_progress(0), _progress(0), False),
            "epoch_progress": _tracker(dict(epochs), dict(epochs)),
        },
        "validate_loop": _idle_loop(),
        "test_loop": _idle_loop(),
        "predict_loop": _idle_loop(None),
    }


_EMBER_KEYS = {"ember_version", "epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers",
               "callbacks", "hyper_parameters", "hparams_type", "hparams_name", "amp_scaling_state", "loops",
               "rng", "accumulated_grads"}


def to_lightning(ckpt: Mapping, *, path: Any = "the checkpoint") -> dict:
    """The PyTorch Lightning checkpoint dict of an ember checkpoint dict.

    Real Lightning (2.x) loads the result with ``LightningModule.load_from_checkpoint`` and resumes it
    with ``Trainer.fit(ckpt_path=...)`` at the same epoch and global step: with the next epoch after a
    save at an epoch's end, at the same batch of the epoch after a save part-way through one (Lightning
    then takes the remaining batches from a new pass over the data). Weights, hyperparameters,
    optimizer, LR scheduler and GradScaler state (``MixedPrecision``) carry over; ``ModelCheckpoint``
    state goes under the key Lightning gives ``ModelCheckpoint(monitor=..., mode=...)`` with its default
    schedule (every epoch). What Lightning has no place for is left out: the RNG states, the data
    loader's position and gradients accumulated inside an unfinished accumulation window (a warning
    names them when present).
    """
    if is_lightning(ckpt):
        raise CheckpointError(f"{path} is already a Lightning checkpoint ({VERSION_KEY} = {ckpt[VERSION_KEY]!r}).")
    if not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: expected a 'state_dict' dict of weights to convert; "
                              f"found keys {sorted(map(str, ckpt))}.")
    epoch = _int(ckpt.get("epoch", 0), "epoch", path)
    global_step = _int(ckpt.get("global_step", 0), "global_step", path)
    out: dict[str, Any] = {"epoch": epoch, "global_step": global_step, VERSION_KEY: LIGHTNING_LAYOUT_VERSION,
                           "state_dict": ckpt["state_dict"]}
    fit = (ckpt.get("loops") or {}).get("fit") if isinstance(ckpt.get("loops"), Mapping) else None
    if "optimizer_states" in ckpt and isinstance(fit, Mapping):
        batch = int(fit.get("batch", 0))
        out["loops"] = _lightning_loops(epoch, batch, global_step, bool(fit.get("epoch_done", False)))
        out["callbacks"] = callbacks_to_lightning(ckpt.get("callbacks") or {})
        out["optimizer_states"] = list(ckpt["optimizer_states"])
        out["lr_schedulers"] = list(ckpt.get("lr_schedulers") or [])
        if ckpt.get("amp_scaling_state"):
            out["MixedPrecision"] = dict(ckpt["amp_scaling_state"])
        if ckpt.get("accumulated_grads"):
            warnings.warn(
                f"{path} was saved inside a gradient accumulation window; Lightning checkpoints cannot hold the "
                "gradients accumulated so far, so the Lightning file leaves them out (that window restarts).",
                stacklevel=2)
    if "hyper_parameters" in ckpt:
        hp = ckpt["hyper_parameters"]
        out["hyper_parameters"] = dict(vars(hp)) if isinstance(hp, argparse.Namespace) else dict(hp)
        out["hparams_name"] = ckpt.get("hparams_name") or "kwargs"
        if ckpt.get("hparams_type") == "Namespace":  # a string: Lightning passes the values as an AttributeDict
            out["hparams_type"] = "Namespace"
        if _holds(out["hyper_parameters"], argparse.Namespace):
            warnings.warn(
                f"{path}: hyperparameters hold argparse.Namespace values. Lightning 2.6 loads checkpoints with "
                "torch.load(weights_only=True), which refuses them: load the Lightning file with "
                "weights_only=False (only if you trust it) or after "
                "torch.serialization.add_safe_globals([argparse.Namespace]).",
                stacklevel=2)
    for k, v in ckpt.items():
        if k not in _EMBER_KEYS and k not in out:
            out[k] = v
    return out


def _holds(v: Any, cls: type) -> bool:
    if isinstance(v, cls):
        return True
    if isinstance(v, Mapping):
        return any(_holds(x, cls) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_holds(x, cls) for x in v)
    return False
