"""Callbacks of a Trainer: the list (with the default ModelCheckpoint), their state keys, and the
dispatch of one hook to the module and every callback that overrides it."""

from __future__ import annotations

from typing import Any, Callable

from ember import compat
from ember.callbacks.base import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.errors import MisconfigurationError


class Hooks:
    """``hooks("on_train_epoch_end", *args)`` runs the module's hook (if it defines one), then each
    callback's that overrides it. ``barrier()`` runs before each: user code may change the state a
    background save is still copying."""

    def __init__(self, module, callbacks: list[Callback], barrier: Callable[[], None], trainer) -> None:
        self.module, self.callbacks, self.barrier, self.trainer = module, callbacks, barrier, trainer
        self._targets: dict[str, list] = {}

    def __call__(self, hook: str, *args: Any) -> None:
        targets = self._targets.get(hook)
        if targets is None:
            targets = self._targets[hook] = _targets(self.module, self.callbacks, hook)
        for fn, is_callback in targets:
            self.barrier()
            if is_callback:
                fn(self.trainer, self.module, *args)
            else:
                fn(*args)


def build_callbacks(enable_checkpointing, checkpoint_callback, callbacks) -> list[Callback]:
    callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise MisconfigurationError(
                f"callbacks must be ember.callbacks.Callback instances; received {type(cb).__name__}.")
    out, enabled = compat.checkpoint_callbacks(enable_checkpointing, checkpoint_callback, callbacks, ModelCheckpoint)
    has_ckpt = any(isinstance(cb, ModelCheckpoint) for cb in out)
    if not enabled and has_ckpt:
        raise MisconfigurationError(
            "checkpointing is turned off (enable_checkpointing=False or checkpoint_callback=False) but a "
            "ModelCheckpoint was given in callbacks; remove one of the two.")
    if enabled and not has_ckpt:
        out.append(ModelCheckpoint())
    keyed(out)
    return out


def keyed(callbacks: list[Callback]) -> dict[str, Callback]:
    """Callbacks by ``state_key``; two with one key would overwrite each other's state."""
    out: dict[str, Callback] = {}
    for cb in callbacks:
        key = cb.state_key
        if key in out:
            raise MisconfigurationError(
                f"two callbacks have the state key {key!r} ({type(out[key]).__name__} and {type(cb).__name__}), so "
                "their checkpointed state would collide; give one another key, e.g. ModelCheckpoint(..., "
                "state_key='best-loss'), or override state_key.")
        out[key] = cb
    return out


def _targets(module, callbacks: list[Callback], hook: str) -> list:
    targets = []
    module_hook = getattr(module, hook, None)
    if callable(module_hook):
        targets.append((module_hook, False))
    base = getattr(Callback, hook)
    for cb in callbacks:
        if getattr(type(cb), hook, base) is not base or hook in vars(cb):
            targets.append((getattr(cb, hook), True))
    return targets
