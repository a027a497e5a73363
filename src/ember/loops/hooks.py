"""Callbacks of a Trainer: their state keys, and the
dispatch of one hook to the module and every callback that overrides it."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ember.core.callback import Callback
from ember.core.data_hooks import DataHooks
from ember.core.hooks import move_to_device
from ember.core.module import Module
from ember.errors import MisconfigurationError
from ember.utilities.rank_zero import rank_zero_warn

_TRANSFER = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
_WARNED: set[str] = set()  # Lightning warns about each of these once per process


def warn_once(message: str) -> None:
    """Warn with ``message`` (global rank 0) unless this process already did."""
    if message not in _WARNED:
        _WARNED.add(message)
        rank_zero_warn(message, stacklevel=2)


class Hooks:
    """``hooks("on_train_epoch_end", *args)`` runs the hook of each callback that overrides it, then
    the module's (if it overrides it): Lightning's order. ``barrier()`` runs before each: user code
    may change the state a background save is still copying. ``current_fx`` names the hook running
    (``self.log`` picks its defaults by it)."""

    def __init__(self, module, callbacks: list[Callback], barrier: Callable[[], None], trainer) -> None:
        self.module, self.callbacks, self.barrier, self.trainer = module, callbacks, barrier, trainer
        self._targets: dict[str, list] = {}
        self.current_fx: str | None = None
        self.stage: str | None = None  # "train", "validate", "sanity", "test" or "predict": what is running
        self.datamodule = None  # its batch-transfer hooks win over the module's, as in Lightning

    def __call__(self, hook: str, *args: Any, monitoring: bool | None = None) -> Any:
        """``monitoring``: None runs every callback; False the ones that do not monitor a metric (and
        the module); True only those that do (ModelCheckpoint, EarlyStopping), as Lightning does at
        the end of a training epoch so they see what the module's hook logged."""
        key = hook if monitoring is None else f"{hook}/{monitoring}"
        targets = self._targets.get(key)
        if targets is None:
            targets = self._targets[key] = _targets(self.module, self.callbacks, hook, monitoring)
        if not targets:
            return None
        outer, self.current_fx = self.current_fx, hook
        result = None
        try:
            for fn, is_callback in targets:
                self.barrier()
                if is_callback:
                    fn(self.trainer, self.module, *args)
                else:
                    result = fn(*args)
        finally:
            self.current_fx = outer
        return result  # the module's (Lightning reads on_train_batch_start's -1)

    def module_hook(self, hook: str, *args: Any) -> Any:
        """Call a module-only hook (configure_model, on_validation_model_eval, ...) and return its result."""
        outer, self.current_fx = self.current_fx, hook
        self.barrier()
        try:
            return getattr(self.module, hook)(*args)
        finally:
            self.current_fx = outer

    def transfer(self, batch: Any, device, dataloader_idx: int = 0) -> Any:
        """The batch on ``device``, through on_before_batch_transfer, transfer_batch_to_device and
        on_after_batch_transfer when the datamodule (first) or the module overrides any of them."""
        chain = self._targets.get("/transfer")
        if chain is None:
            chain = self._targets["/transfer"] = self._transfer_chain()
        if not chain:
            return move_to_device(batch, device)
        before, to_device, after = chain
        self.barrier()
        batch = before(batch, dataloader_idx)
        batch = to_device(batch, device, dataloader_idx)
        return after(batch, dataloader_idx)

    def _transfer_chain(self) -> list:
        """Per hook, Lightning's choice: the datamodule's override, else the module's (warning, as Lightning,
        when a datamodule is given and the module's override loses, or is used instead of the datamodule's)."""
        dm, chain, custom = self.datamodule, [], False
        for hook in _TRANSFER:
            in_module = overrides(self.module, Module, hook)
            if dm is not None and callable(getattr(dm, hook, None)) and overrides(dm, DataHooks, hook):
                chain.append(getattr(dm, hook))
                custom = True
                if in_module:
                    warn_once(f"You have overridden `{hook}` in both `LightningModule` and `LightningDataModule`. "
                              "It will use the implementation from `LightningDataModule` instance.")
                continue
            if dm is not None and in_module:
                warn_once(f"You have overridden `{hook}` in `LightningModule` but have passed in a "
                          "`LightningDataModule`. It will use the implementation from `LightningModule` instance.")
            chain.append(getattr(self.module, hook))
            custom = custom or in_module
        return chain if custom else []

    def forget(self) -> None:
        """Callbacks or the module changed: look the targets up again."""
        self._targets = {}


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


def is_monitoring(cb: Callback) -> bool:
    """Lightning runs checkpoint and early-stopping callbacks after the module at a training epoch's end."""
    return any(c.__name__ in ("ModelCheckpoint", "EarlyStopping", "Checkpoint") for c in type(cb).__mro__)


def overrides(obj, base: type, hook: str) -> bool:
    """Whether ``obj`` (its class or the instance itself) defines ``hook`` differently from ``base``."""
    return hook in vars(obj) or getattr(type(obj), hook, None) is not getattr(base, hook, None)


def _targets(module, callbacks: list[Callback], hook: str, monitoring: bool | None) -> list:
    targets = []
    if hasattr(Callback, hook):
        for cb in callbacks:
            if monitoring is not None and is_monitoring(cb) != monitoring:
                continue
            if overrides(cb, Callback, hook):
                targets.append((getattr(cb, hook), True))
    if monitoring is not True and callable(getattr(module, hook, None)) and overrides(module, Module, hook):
        targets.append((getattr(module, hook), False))
    return targets


def takes_batch_idx(step: Callable[..., Any] | None) -> bool:
    """Whether a step method takes ``batch_idx`` (Lightning reads the signature: ``training_step(self, batch)``
    is called without it). Yes when it names ``batch_idx``, takes ``*args`` or has two positional parameters."""
    if step is None:
        return True
    try:
        params = list(inspect.signature(step).parameters.values())
    except (TypeError, ValueError):  # a builtin or an odd callable: pass everything
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return (any(p.name == "batch_idx" for p in params) or any(p.kind is p.VAR_POSITIONAL for p in params)
            or len(positional) >= 2)
