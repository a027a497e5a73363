"""How the Trainer profiles a run: a Hooks subclass that times every hook, and timed wrappers put on
one FitLoop's methods. Nothing here is used without a profiler, so an unprofiled loop runs its
plain methods (no check, no context manager per hook)."""

from __future__ import annotations

import functools
from typing import Any, Callable

from ember.core.callback import Callback
from ember.core.module import Module
from ember.errors import MisconfigurationError
from ember.loops.hooks import Hooks, is_monitoring, overrides
from ember.profilers.advanced import AdvancedProfiler
from ember.profilers.base import PassThroughProfiler
from ember.profilers.profiler import Profiler
from ember.profilers.pytorch import PyTorchProfiler
from ember.profilers.simple import SimpleProfiler

PROFILERS = {"simple": SimpleProfiler, "advanced": AdvancedProfiler, "pytorch": PyTorchProfiler}
STEPS = ("training_step", "validation_step", "test_step", "predict_step")
UNPROFILED = ("prepare_data", "configure_model")  # Lightning does not time these either


def resolve_profiler(profiler: Profiler | str | None) -> Profiler:
    """``Trainer(profiler=...)``: None (records nothing), "simple", "advanced", "pytorch" or a Profiler."""
    if profiler is None:
        return PassThroughProfiler()
    if isinstance(profiler, Profiler):
        return profiler
    if isinstance(profiler, str) and profiler.lower() in PROFILERS:
        return PROFILERS[profiler.lower()]()
    if isinstance(profiler, str) and profiler.lower() == "xla":
        raise MisconfigurationError("profiler='xla' profiles TPUs, which ember does not support; use 'simple', "
                                    "'advanced' or 'pytorch'.")
    raise MisconfigurationError(f"profiler must be None, one of {sorted(PROFILERS)} or an ember.profilers.Profiler; "
                                f"received {profiler!r}.")


def is_active(profiler: Profiler | None) -> bool:
    return profiler is not None and not isinstance(profiler, PassThroughProfiler)


def timed(profiler: Profiler, name: str, fn: Callable) -> Callable:
    """``fn`` recorded as one call of action ``name`` each time it runs."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        profiler.start(name)
        try:
            return fn(*args, **kwargs)
        finally:
            profiler.stop(name)
    return run


def strategy_name(trainer) -> str:
    strategy = getattr(trainer, "strategy", None)
    return type(strategy).__name__ if strategy is not None else "SingleDeviceStrategy"


class ProfiledHooks(Hooks):
    """Hooks whose every target is timed as ``[Callback]<state_key>.<hook>`` or
    ``[LightningModule]<Class>.<hook>`` (steps as ``[Strategy]<Strategy>.<step>``), as Lightning names them."""

    profiler: Profiler

    def __call__(self, hook: str, *args: Any, monitoring: bool | None = None) -> Any:
        key = hook if monitoring is None else f"{hook}/{monitoring}"
        if key not in self._targets:
            self._targets[key] = self._timed_targets(hook, monitoring)
        return super().__call__(hook, *args, monitoring=monitoring)

    def _timed_targets(self, hook: str, monitoring: bool | None) -> list:
        prof, targets = self.profiler, []
        if hasattr(Callback, hook):
            for cb in self.callbacks:
                if (monitoring is None or is_monitoring(cb) == monitoring) and overrides(cb, Callback, hook):
                    targets.append((timed(prof, f"[Callback]{cb.state_key}.{hook}", getattr(cb, hook)), True))
        module = self.module
        if monitoring is not True and callable(getattr(module, hook, None)) and overrides(module, Module, hook):
            targets.append((timed(prof, f"[LightningModule]{type(module).__name__}.{hook}", getattr(module, hook)),
                            False))
        return targets

    def module_hook(self, hook: str, *args: Any) -> Any:
        if hook in UNPROFILED:
            return super().module_hook(hook, *args)
        name = (f"[Strategy]{strategy_name(self.trainer)}.{hook}" if hook in STEPS
                else f"[LightningModule]{type(self.module).__name__}.{hook}")
        self.profiler.start(name)
        try:
            return super().module_hook(hook, *args)
        finally:
            self.profiler.stop(name)

    def transfer(self, batch: Any, device, dataloader_idx: int = 0) -> Any:
        name = f"[Strategy]{strategy_name(self.trainer)}.batch_to_device"
        self.profiler.start(name)
        try:
            return super().transfer(batch, device, dataloader_idx)
        finally:
            self.profiler.stop(name)


def hooks_for(profiler: Profiler | None) -> Callable[..., Hooks]:
    """The Hooks class to build: plain without a profiler, else one whose instances time every hook."""
    if not is_active(profiler):
        return Hooks

    def build(*args: Any, **kwargs: Any) -> Hooks:
        hooks = ProfiledHooks(*args, **kwargs)
        hooks.profiler = profiler
        return hooks
    return build


class _TimedIterator:
    def __init__(self, it, profiler: Profiler, name: str) -> None:
        self.it, self.profiler, self.name = it, profiler, name

    def __iter__(self):
        return self

    def __next__(self):
        self.profiler.start(self.name)
        try:
            return next(self.it)
        finally:
            self.profiler.stop(self.name)


def instrument_loop(loop, profiler: Profiler | None, trainer=None) -> None:
    """Put timed wrappers on this FitLoop's epoch, batch, step, backward and data fetches (instance
    attributes: the class's methods, and other loops, are untouched)."""
    if not is_active(profiler):
        return
    strategy, module = strategy_name(trainer), type(loop.parts.module).__name__
    loop.run_epoch = timed(profiler, "run_training_epoch", loop.run_epoch)
    loop.train_step = timed(profiler, "run_training_batch", loop.train_step)
    loop.backward = timed(profiler, f"[Strategy]{strategy}.backward", loop.backward)
    loop.optimizer_step = timed(profiler, f"[LightningModule]{module}.optimizer_step", loop.optimizer_step)
    step = loop.parts.training_step or loop.parts.module.training_step
    loop.parts.training_step = timed(profiler, f"[Strategy]{strategy}.training_step", step)
    start_epoch = loop._start_epoch
    loop._start_epoch = lambda *a: _TimedIterator(start_epoch(*a), profiler,
                                                  "[_TrainingEpochLoop].train_dataloader_next")
