"""What a checkpoint holds: collect it from a fitting Trainer, and put it back.

Keys (a plain dict, as Lightning users know it): ``epoch``, ``global_step``, ``state_dict``,
``optimizer_states``, ``lr_schedulers``, ``callbacks`` (state by ``state_key``),
``hyper_parameters`` (+ ``hparams_type``, ``hparams_name``), ``amp_scaling_state`` (when a
GradScaler is used), ``loops`` (the loop's position, for exact resume), ``rng`` (every global
random state), ``accumulated_grads`` (only when saved inside an accumulation window) and
``ember_version``. Weights-only checkpoints hold the weights, hparams, epoch and step only.
"""

from __future__ import annotations

import warnings
from argparse import Namespace
from typing import Any

import torch
from torch import nn

from ember.checkpoint import codec
from ember.errors import CheckpointError, CheckpointMismatchError

WEIGHTS_ONLY_KEYS = ("epoch", "global_step", "state_dict", "hyper_parameters", "hparams_type", "hparams_name",
                     "ember_version")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP/FSDP-style wrappers (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif type(model).__name__ in ("DistributedDataParallel", "DataParallel") and isinstance(
                getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def hparams_entries(module: nn.Module) -> dict[str, Any]:
    """The hyperparameters to save. Values a checkpoint cannot hold (a module passed to __init__, say)
    are left out with a warning that says how to pass them at load time."""
    hp = getattr(module, "hparams", None)
    if hp is None:
        return {}
    if isinstance(hp, Namespace):
        values, kind = dict(vars(hp)), "Namespace"
    else:
        values, kind = dict(hp), "dict"
    if not values:
        return {}
    storable = {}
    for k, v in values.items():
        try:
            codec.flatten({k: v})
        except CheckpointError:
            _warn_unstorable_hparam(module, k, v)
            continue
        storable[k] = v
    return {"hyper_parameters": storable, "hparams_type": kind,
            "hparams_name": module.__dict__.get("_hparams_name")}


def _warn_unstorable_hparam(module: nn.Module, name: str, value: Any) -> None:
    warned = module.__dict__.setdefault("_ember_warned_hparams", set())
    if name in warned:
        return
    warned.add(name)
    cls = type(module).__name__
    warnings.warn(
        f"hyperparameter {name!r} ({type(value).__name__}) cannot be stored in a checkpoint and is left out. "
        f"Pass it when loading: {cls}.load_from_checkpoint(path, {name}=...), or keep it out of the "
        f"hyperparameters with self.save_hyperparameters(ignore=[{name!r}]).",
        stacklevel=4,
    )


def is_weights_only(ckpt: dict) -> bool:
    return "optimizer_states" not in ckpt or "loops" not in ckpt


def check_resumable(ckpt: dict, path, n_optimizers: int, n_schedulers: int) -> None:
    """Refuse, with the reason and the fix, a checkpoint that cannot resume this training."""
    if is_weights_only(ckpt):
        raise CheckpointMismatchError(
            f"{path} holds weights only (no optimizer or loop state), so training cannot resume from it. "
            "Load the weights with Module.load_from_checkpoint(path) and start a new fit, or resume from a "
            "full checkpoint (ModelCheckpoint(save_weights_only=False))."
        )
    saved_opt, saved_sched = len(ckpt["optimizer_states"]), len(ckpt.get("lr_schedulers", []))
    if saved_opt != n_optimizers or saved_sched != n_schedulers:
        raise CheckpointMismatchError(
            f"{path} was saved with {saved_opt} optimizer(s) and {saved_sched} LR scheduler(s), but "
            f"configure_optimizers() now returns {n_optimizers} and {n_schedulers}. Resume with the same "
            "configure_optimizers() that wrote the checkpoint."
        )


def gradients(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in module.named_parameters() if p.grad is not None}


def restore_gradients(module: nn.Module, grads: dict[str, torch.Tensor]) -> None:
    for name, p in module.named_parameters():
        if name in grads:
            p.grad = grads[name].to(device=p.device, dtype=p.dtype).clone()
