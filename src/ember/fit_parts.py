"""What one fit trains: the module, its optimizers and schedulers, precision, and the loaders."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ember.data import ResumableLoader
from ember.errors import MisconfigurationError
from ember.optim import SchedulerConfig, parse_optimizers
from ember.precision import Precision


@dataclass
class FitParts:
    """What one fit trains: built by the Trainer from the module, its loaders and configure_optimizers()."""

    module: torch.nn.Module
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[SchedulerConfig]
    precision: Precision
    train_data: ResumableLoader
    val_loaders: list = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    reload: Callable[[], tuple[Any, Any]] | None = None  # fresh (train, val) loaders, for reloading
    training_step: Callable[..., Any] | None = None  # the module's, through a DDP/FSDP wrapper when there is one
    shard: Callable[[Any], Any] | None = None  # a training loader -> this rank's share of it (many processes)
    pre_backward: Callable[[torch.Tensor], None] | None = None  # before manual_backward (DDP readies its all-reduce)
    shard_val: Callable[[Any], Any] | None = None  # a validation loader -> this rank's share of it

    @classmethod
    def build(cls, model, train, val, precision: str, device: torch.device, reload=None, strategy: Any = None,
              wrapped: Any = None, distributed_sampler: bool = True) -> "FitParts":
        """With a ``strategy`` (a job of many processes) ``training_step`` runs through ``wrapped`` (so
        that gradients are all-reduced) and, with ``distributed_sampler``, the training and validation
        data are sharded across ranks (validation unshuffled, padded to equal lengths)."""
        if train is None:
            raise MisconfigurationError(
                "no training data: pass fit(model, train_dataloaders=...), a datamodule, or define train_dataloader().")
        step = shard = shard_val = pre_backward = None
        if strategy is not None:
            step = functools.partial(strategy.training_step, wrapped)
            if hasattr(strategy, "pre_backward"):
                pre_backward = functools.partial(strategy.pre_backward, wrapped)
            if distributed_sampler:
                shard = functools.partial(strategy.distributed_loader, shuffle=True)  # Lightning shuffles training
                shard_val = functools.partial(strategy.distributed_loader, stage="validate")
                train = shard(train)
        optimizers, schedulers = parse_optimizers(model.configure_optimizers())
        return cls(module=model, optimizers=optimizers, schedulers=schedulers, precision=Precision(precision, device),
                   train_data=ResumableLoader(train), val_loaders=val_loaders_of(model, val, shard_val), device=device,
                   reload=reload, training_step=step, shard=shard, pre_backward=pre_backward, shard_val=shard_val)


def as_loaders(loaders: Any) -> list:
    """One loader, or a list/tuple of them, as a list (None: none)."""
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def val_loaders_of(model, val: Any, shard: Callable[[Any], Any] | None = None) -> list:
    loaders = as_loaders(val) if hasattr(model, "validation_step") else []
    return [shard(loader) for loader in loaders] if shard is not None else loaders


def batch_outputs(output: Any, accum: int) -> dict:
    """What on_train_batch_end receives, as in Lightning: ``{"loss": detached loss (divided by
    accumulate_grad_batches), **other entries}``; ``{}`` when training_step returned None."""
    if output is None:
        return {}
    if isinstance(output, torch.Tensor):
        return {"loss": output.detach() / accum if accum > 1 else output.detach()}
    if isinstance(output, dict):
        loss = output.get("loss")
        if isinstance(loss, torch.Tensor):
            return {**output, "loss": loss.detach() / accum if accum > 1 else loss.detach()}
        return dict(output)
    return output  # manual optimization may return anything
