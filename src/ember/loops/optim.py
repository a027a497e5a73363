"""Turn whatever configure_optimizers() returned into optimizers and scheduler settings."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch

from ember.errors import MisconfigurationError
from ember.loops.results import as_float

_FORMS = (
    "an optimizer; a list or tuple of optimizers; a pair ([optimizers], [schedulers]); or a dict "
    "{'optimizer': opt, 'lr_scheduler': scheduler or {'scheduler': s, 'interval': 'epoch'|'step', "
    "'frequency': n, 'monitor': 'val_loss'}} (or a list of such dicts)"
)


@dataclass
class SchedulerConfig:
    """One LR scheduler and when it steps."""

    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None  # LearningRateMonitor logs this scheduler's optimizer under it (Lightning's key)

    @property
    def reduce_on_plateau(self) -> bool:
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def _is_optimizer(x: Any) -> bool:
    return isinstance(x, torch.optim.Optimizer)


def _is_scheduler(x: Any) -> bool:
    return hasattr(x, "step") and hasattr(x, "state_dict") and hasattr(x, "optimizer")


def _scheduler_config(item: Any, monitor: str | None = None) -> SchedulerConfig:
    if isinstance(item, Mapping):
        if "scheduler" not in item:
            raise MisconfigurationError(
                f"an lr_scheduler dict needs a 'scheduler' entry; received keys {sorted(item)}. Expected {_FORMS}."
            )
        extra = set(item) - {"scheduler", "interval", "frequency", "monitor", "strict", "name", "reduce_on_plateau"}
        if extra:
            raise MisconfigurationError(f"unknown lr_scheduler keys {sorted(extra)}; expected {_FORMS}.")
        cfg = SchedulerConfig(
            scheduler=item["scheduler"],
            interval=item.get("interval", "epoch"),
            frequency=item.get("frequency", 1),
            monitor=item.get("monitor", monitor),
            strict=item.get("strict", True),
            name=item.get("name"),
        )
    else:
        cfg = SchedulerConfig(scheduler=item, monitor=monitor)
    if not _is_scheduler(cfg.scheduler):
        raise MisconfigurationError(
            f"expected an LR scheduler (torch.optim.lr_scheduler.*); received {type(cfg.scheduler).__name__}."
        )
    if cfg.interval not in ("epoch", "step"):
        raise MisconfigurationError(f"lr_scheduler interval must be 'epoch' or 'step'; received {cfg.interval!r}.")
    if not isinstance(cfg.frequency, int) or cfg.frequency < 1:
        raise MisconfigurationError(f"lr_scheduler frequency must be an int >= 1; received {cfg.frequency!r}.")
    if cfg.reduce_on_plateau and cfg.monitor is None:
        raise MisconfigurationError(
            "ReduceLROnPlateau needs a metric: return {'optimizer': opt, 'lr_scheduler': {'scheduler': s, "
            "'monitor': 'val_loss'}} from configure_optimizers."
        )
    return cfg


def parse_optimizers(returned: Any) -> tuple[list[torch.optim.Optimizer], list[SchedulerConfig]]:
    """Every form Lightning accepts; anything else is a MisconfigurationError naming what was received."""
    optimizers: list = []
    schedulers: list[SchedulerConfig] = []
    if _is_optimizer(returned):
        optimizers = [returned]
    elif isinstance(returned, Mapping):
        _take_dict(returned, optimizers, schedulers)
    elif isinstance(returned, Sequence) and not isinstance(returned, (str, bytes)):
        items = list(returned)
        if len(items) == 2 and isinstance(items[0], Sequence) and isinstance(items[1], Sequence):
            optimizers = list(items[0])
            schedulers = [_scheduler_config(s) for s in items[1]]
        elif items and all(isinstance(i, Mapping) for i in items):
            for d in items:
                _take_dict(d, optimizers, schedulers)
        else:
            optimizers = items
    elif returned is None:
        raise MisconfigurationError(f"configure_optimizers() returned None; it must return {_FORMS}.")
    else:
        raise MisconfigurationError(
            f"configure_optimizers() returned {type(returned).__name__}; it must return {_FORMS}."
        )
    if not optimizers:
        raise MisconfigurationError(f"configure_optimizers() returned no optimizer; it must return {_FORMS}.")
    bad = [type(o).__name__ for o in optimizers if not _is_optimizer(o)]
    if bad:
        raise MisconfigurationError(
            f"configure_optimizers() returned {bad} where optimizers were expected; it must return {_FORMS}."
        )
    for cfg in schedulers:
        if not any(cfg.scheduler.optimizer is o for o in optimizers):
            raise MisconfigurationError(
                f"{type(cfg.scheduler).__name__} was built for an optimizer that configure_optimizers() "
                "did not return; build each scheduler on one of the returned optimizers."
            )
    return optimizers, schedulers


def _take_dict(d: Mapping, optimizers: list, schedulers: list) -> None:
    if "optimizer" not in d:
        raise MisconfigurationError(
            f"configure_optimizers() returned a dict without 'optimizer' (keys: {sorted(d)}); expected {_FORMS}."
        )
    extra = set(d) - {"optimizer", "lr_scheduler", "monitor", "frequency"}
    if extra:
        raise MisconfigurationError(f"unknown configure_optimizers() keys {sorted(extra)}; expected {_FORMS}.")
    optimizers.append(d["optimizer"])
    if d.get("lr_scheduler") is not None:
        schedulers.append(_scheduler_config(d["lr_scheduler"], monitor=d.get("monitor")))


def step_scheduler(cfg: SchedulerConfig, metrics: Mapping[str, Any]) -> None:
    """Step one scheduler; ReduceLROnPlateau gets its monitored metric."""
    if cfg.reduce_on_plateau:
        if cfg.monitor not in metrics:
            if cfg.strict:
                raise MisconfigurationError(
                    f"ReduceLROnPlateau monitors {cfg.monitor!r}, which was not logged; logged metrics are "
                    f"{sorted(metrics)}. Log it, or set 'strict': False in the lr_scheduler dict.")
            warnings.warn(f"ReduceLROnPlateau skipped: {cfg.monitor!r} was not logged", stacklevel=2)
            return
        cfg.scheduler.step(as_float(metrics[cfg.monitor]))
        return
    with warnings.catch_warnings():
        # After a resume the first scheduler step can precede this process's first optimizer step.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
        cfg.scheduler.step()


@contextlib.contextmanager
def frozen_except(optimizer: torch.optim.Optimizer | None,
                  optimizers: Sequence[torch.optim.Optimizer]) -> Iterator[None]:
    """Freeze parameters that belong to other optimizers while ``optimizer``'s loss is backpropagated
    (nothing is frozen when ``optimizer`` is None)."""
    frozen = []
    if optimizer is not None:
        mine = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for opt in optimizers:
            for g in opt.param_groups:
                for p in g["params"]:
                    if id(p) not in mine and p.requires_grad:
                        p.requires_grad_(False)
                        frozen.append(p)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
