"""What a checkpoint holds: the named ``Stateful`` parts of a run, and the one adapter between them
and the checkpoint dict users know.

A run is a handful of named parts, each with ``state_dict()`` / ``load_state_dict()``: the model,
each optimizer, each LR scheduler, the precision plugin (GradScaler), the loop (epoch, step, data
position, RNG states, mid-window gradients) and each callback (by ``state_key``). ``collect`` turns
them into the dict below and ``restore`` puts one back, each fact read from exactly one key:

``epoch``, ``global_step`` (the loop's position), ``state_dict`` (weights), ``optimizer_states``,
``lr_schedulers``, ``callbacks`` (state by ``state_key``), ``hyper_parameters`` (+ ``hparams_type``,
``hparams_name``), ``amp_scaling_state`` (when a GradScaler is used), ``loops`` (the rest of the
loop's position, for exact resume), ``rng`` (every global random state), ``accumulated_grads`` (only
when saved inside an accumulation window) and ``ember_version``. Weights-only checkpoints hold the
weights, hparams, epoch and step only.

The parts are kept by name (``RunState.parts()``) so that a distributed checkpointer can later be
handed the same objects to load into in place.
"""

from __future__ import annotations

import warnings
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

from ember import compat
from ember.checkpoint.format.mapping import unshare
from ember.checkpoint.format import codec
from ember.checkpoint import ranks as per_rank
from ember.errors import CheckpointError, CheckpointMismatchError
from ember.version import __version__

LOOP_TOP_KEYS = ("epoch", "global_step")           # the loop's facts stored at the top level
LOOP_SIDE_KEYS = ("rng", "accumulated_grads")      # the loop's facts stored beside ``loops``


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel/DataParallel and ember's ``StepDispatch`` (``.module``)
    and ``torch.compile`` (``._orig_mod``) wrappers. The one place ember unwraps models."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif type(model).__name__ in ("DistributedDataParallel", "DataParallel", "StepDispatch") and isinstance(
                getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


@dataclass
class RunState:
    """The Stateful parts of one training run, by name."""

    model: nn.Module
    loop: Stateful
    optimizers: list = field(default_factory=list)
    lr_schedulers: list = field(default_factory=list)
    precision: Stateful | None = None
    callbacks: dict[str, Stateful] = field(default_factory=dict)

    def parts(self) -> dict[str, Stateful]:
        """Every part under a stable name (``optimizer.0``, ``callback.<state_key>``, ...)."""
        out: dict[str, Any] = {"model": unwrap_model(self.model), "loop": self.loop}
        out.update({f"optimizer.{i}": o for i, o in enumerate(self.optimizers)})
        out.update({f"lr_scheduler.{i}": s for i, s in enumerate(self.lr_schedulers)})
        if self.precision is not None:
            out["precision"] = self.precision
        out.update({f"callback.{k}": cb for k, cb in self.callbacks.items()})
        return out


# ----------------------------------------------------------------------------- collect


def collect(run: RunState, weights_only: bool = False, gather: Callable[[dict], dict | None] | None = None,
            tensors: Callable[[nn.Module, list], dict] | None = None) -> dict[str, Any]:
    """The checkpoint dict of ``run``'s current state. ``gather`` (a collective, called on every rank of
    a job) adds every rank's loop position to the writing rank's (``ember.checkpoint.ranks``).
    ``tensors(module, optimizers)`` gives ``state_dict`` and ``optimizer_states`` when they are sharded
    (``FSDPStrategy.state_for_save``)."""
    module = unwrap_model(run.model)
    loop = dict(run.loop.state_dict())
    if gather is not None and not weights_only:
        loop = gather(loop) or loop
    ckpt: dict[str, Any] = {"ember_version": __version__}
    for k in LOOP_TOP_KEYS:
        ckpt[k] = loop.pop(k)
    sharded = tensors(module, [] if weights_only else run.optimizers) if tensors is not None else None
    ckpt["state_dict"] = sharded["state_dict"] if sharded is not None else module.state_dict()
    ckpt.update(hparams_entries(module))
    if weights_only:
        return ckpt
    ckpt["optimizer_states"] = (sharded["optimizer_states"] if sharded is not None
                                else [o.state_dict() for o in run.optimizers])
    ckpt["lr_schedulers"] = [s.state_dict() for s in run.lr_schedulers]
    ckpt["callbacks"] = {key: cb.state_dict() for key, cb in run.callbacks.items()}
    scaler = run.precision.state_dict() if run.precision is not None else {}
    if scaler:
        ckpt["amp_scaling_state"] = scaler
    side = {k: loop.pop(k) for k in LOOP_SIDE_KEYS if k in loop}
    ckpt["loops"] = {"fit": loop}
    ckpt.update({k: v for k, v in side.items() if v is not None and v != {}})
    return ckpt


def hparams_entries(module: nn.Module) -> dict[str, Any]:
    """The hyperparameters to save. Values a checkpoint cannot hold (a module passed to __init__, say)
    are left out with a warning that says how to pass them at load time."""
    hp = getattr(module, "hparams", None)
    if hp is None:
        return {}
    values, kind = (dict(vars(hp)), "Namespace") if isinstance(hp, Namespace) else (dict(hp), "dict")
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
        stacklevel=5,
    )


# ----------------------------------------------------------------------------- restore


def is_weights_only(ckpt: Mapping) -> bool:
    return "optimizer_states" not in ckpt or "loops" not in ckpt


def loop_state(ckpt: Mapping, path: Any) -> dict[str, Any]:
    """The loop's Stateful state, gathered from its keys (files of ember 0.1 hold it the same way)."""
    loops = ckpt.get("loops")
    fit = loops.get("fit") if isinstance(loops, Mapping) else None
    if not isinstance(fit, Mapping):
        raise CheckpointMismatchError(
            f"{path} has no loop position (expected loops['fit'] to be a dict; found loops={_short(loops)}), "
            "so training cannot resume from it exactly. Load its weights with Module.load_from_checkpoint(path) "
            "and start a new fit.")
    state = dict(fit)
    for k in LOOP_TOP_KEYS:
        v = ckpt.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise CheckpointMismatchError(f"{path}: {k} must be an int >= 0; found {_short(v)}.")
        state[k] = v
    for k in LOOP_SIDE_KEYS:
        state[k] = ckpt.get(k)
    return state


def check_resumable(ckpt: Mapping, path: Any, run: RunState) -> None:
    """Refuse, with the reason and the fix, a checkpoint that cannot resume ``run``."""
    if is_weights_only(ckpt):
        raise CheckpointMismatchError(
            f"{path} holds weights only (no optimizer or loop state), so training cannot resume from it. "
            "Load the weights with Module.load_from_checkpoint(path) and start a new fit, or resume from a "
            "full checkpoint (ModelCheckpoint(save_weights_only=False))."
        )
    if not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointMismatchError(f"{path}: state_dict must be a dict of tensors; "
                                      f"found {_short(ckpt.get('state_dict'))}.")
    opts, scheds = ckpt["optimizer_states"], ckpt.get("lr_schedulers", [])
    if not isinstance(opts, list) or not all(isinstance(o, Mapping) for o in opts) or not isinstance(scheds, list):
        raise CheckpointMismatchError(
            f"{path}: optimizer_states and lr_schedulers must be lists of dicts; "
            f"found {_short(opts)} and {_short(scheds)}.")
    if len(opts) != len(run.optimizers) or len(scheds) != len(run.lr_schedulers):
        raise CheckpointMismatchError(
            f"{path} was saved with {len(opts)} optimizer(s) and {len(scheds)} LR scheduler(s), but "
            f"configure_optimizers() now returns {len(run.optimizers)} and {len(run.lr_schedulers)}. Resume with "
            "the same configure_optimizers() that wrote the checkpoint."
        )
    for i, (opt, saved) in enumerate(zip(run.optimizers, opts)):
        _check_optimizer(i, opt, saved, path)


def _check_optimizer(i: int, opt: torch.optim.Optimizer, saved: Mapping, path: Any) -> None:
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or not groups or not isinstance(groups[0], Mapping):
        raise CheckpointMismatchError(f"{path}: optimizer {i} has no param_groups list; "
                                      "the checkpoint is not one ember wrote.")
    have = set(opt.defaults)
    got = set(groups[0]) - {"params"}
    if have - got:
        saved_kind = _optimizer_named_by(got)
        raise CheckpointMismatchError(
            f"{path}: optimizer {i} was saved by {saved_kind}, but configure_optimizers() now returns "
            f"{type(opt).__name__}, whose settings {sorted(have - got)} the checkpoint does not have. Resume with "
            f"the optimizer that wrote the checkpoint, or load only the weights (Module.load_from_checkpoint).")


def check_param_groups(ckpt: Mapping, path: Any, run: RunState) -> None:
    """Refuse optimizer states with another number of param groups than the run's optimizers have, once the
    callbacks' state is restored (a ``BaseFinetuning`` has put back the groups it added by then)."""
    for i, (opt, saved) in enumerate(zip(run.optimizers, ckpt["optimizer_states"])):
        if len(saved["param_groups"]) != len(opt.param_groups):
            raise CheckpointMismatchError(
                f"{path}: optimizer {i} was saved with {len(saved['param_groups'])} param groups, and this run's has "
                f"{len(opt.param_groups)}. A callback that adds param groups while training (BaseFinetuning, "
                "BackboneFinetuning) puts them back on resume: fit with it again (same state_key); else build the "
                "optimizer with the param groups it was saved with.")


def _optimizer_named_by(keys: set[str]) -> str:
    """The torch optimizer whose settings are exactly ``keys`` (for messages), else a description."""
    probe = [torch.zeros(1, requires_grad=True)]
    for cls in torch.optim.Optimizer.__subclasses__():
        try:
            defaults = set(cls(probe).defaults)
        except Exception:  # noqa: BLE001 - an optimizer that needs arguments we cannot guess
            continue
        if defaults == keys:
            return f"torch.optim.{cls.__name__}"
    return f"an optimizer with settings {sorted(keys)}"


def restore(run: RunState, ckpt: Mapping, path: Any, load_tensors: Callable[..., None] | None = None) -> None:
    """Load ``ckpt`` into every part of ``run`` (call ``check_resumable`` first). ``load_tensors(module,
    optimizers, ckpt)`` loads the weights and optimizer states when they are sharded
    (``FSDPStrategy.load_state``)."""
    # callbacks first, as Lightning: BaseFinetuning puts back the param groups the optimizer states need
    restore_callbacks(run.callbacks, ckpt.get("callbacks") or {}, path)
    if load_tensors is not None:
        load_tensors(unwrap_model(run.model), run.optimizers, ckpt)
    else:
        model = unwrap_model(run.model)
        load_weights(model, ckpt["state_dict"], strict=getattr(model, "strict_loading", True), source=path)
        for opt, state in zip(run.optimizers, ckpt["optimizer_states"]):
            opt.load_state_dict(state)
            unshare(opt)  # its own memory, not views of the (mapped) checkpoint file
    for sched, state in zip(run.lr_schedulers, ckpt.get("lr_schedulers", [])):
        sched.load_state_dict(state)
    if run.precision is not None:
        run.precision.load_state_dict(ckpt.get("amp_scaling_state") or {})
    run.loop.load_state_dict(per_rank.scatter(loop_state(ckpt, path), path))  # this rank's RNG and data


def restore_callbacks(callbacks: Mapping[str, Stateful], saved: Mapping[str, Any], path: Any) -> None:
    """Give each callback the state saved under its key (or its ember 0.1 key); warn about state
    that no callback claims, so it is never dropped silently."""
    claimed = set()
    for key, cb in callbacks.items():
        found = key if key in saved else compat.legacy_state_key([k for k in saved if k not in claimed], cb)
        if found is not None:
            claimed.add(found)
            cb.load_state_dict(saved[found])
    unclaimed = [k for k, v in saved.items() if k not in claimed and v]
    if unclaimed:
        warnings.warn(
            f"{path} holds state for callbacks {unclaimed} that no callback of this Trainer claims "
            f"(this Trainer's callbacks have keys {sorted(callbacks)}); that state is not restored. Add the "
            "callback again, or give it the same state_key, to restore it.",
            stacklevel=4,
        )


def gradients(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in module.named_parameters() if p.grad is not None}


def restore_gradients(module: nn.Module, grads: Mapping[str, torch.Tensor]) -> None:
    for name, p in module.named_parameters():
        if name in grads:
            p.grad = grads[name].to(device=p.device, dtype=p.dtype).clone()


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, torch.Tensor) else f"a tensor of shape {tuple(v.shape)}"
    return text if len(text) <= 60 else text[:57] + "..."


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool, source) -> None:
    """Load weights with errors that name the missing, unexpected and mis-shaped keys."""
    model = unwrap_model(model)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != own[k].shape
    ]
    if shapes:
        raise CheckpointMismatchError(
            f"the weights in {source} do not fit {type(model).__name__}: shapes differ for " + "; ".join(shapes)
            + ". Build the model with the same sizes as the one that was saved."
        )
    if strict and (missing or unexpected):
        raise CheckpointMismatchError(
            f"the weights in {source} do not match {type(model).__name__}: missing keys {missing}; "
            f"unexpected keys {unexpected}. Pass strict=False to load only the keys that match."
        )
    if missing or unexpected:
        warnings.warn(
            f"loaded {source} with strict=False: missing keys {missing}; unexpected keys {unexpected}",
            stacklevel=3,
        )
    try:
        model.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied
        raise CheckpointError(f"could not load the weights in {source} into {type(model).__name__}: {e}") from e


DATAMODULE_HPARAMS = "datamodule_hyper_parameters"


def dump_datamodule(dm: Any, ckpt: dict) -> None:
    """The datamodule's state (under its class's name) and hparams (``datamodule_hyper_parameters``) into
    ``ckpt``, where Lightning writes them."""
    if dm is None:
        return
    state = dm.state_dict() if callable(getattr(dm, "state_dict", None)) else None
    if state:
        ckpt[type(dm).__qualname__] = state
    if getattr(dm, "hparams", None):
        ckpt[DATAMODULE_HPARAMS] = dict(dm.hparams)


def restore_datamodule(dm: Any, ckpt: dict) -> None:
    """The datamodule's state from ``ckpt``, if it saved one and can load it."""
    if dm is not None and type(dm).__qualname__ in ckpt and callable(getattr(dm, "load_state_dict", None)):
        dm.load_state_dict(ckpt[type(dm).__qualname__])
