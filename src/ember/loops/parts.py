"""What one fit trains: the module, its optimizers and schedulers, precision, and the loaders."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ember.loops.data import ResumableLoader, end_workers
from ember.errors import MisconfigurationError
from ember.loops.optim import SchedulerConfig, parse_optimizers
from ember.loops.precision import Precision
from ember.loops.combined_loader import as_train_data, map_loaders


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

    @classmethod
    def build(cls, model, train, val, precision: str, device: torch.device, reload=None, strategy: Any = None,
              wrapped: Any = None) -> "FitParts":
        """With a ``strategy`` (a job of many processes) the training data is sharded across ranks and
        ``training_step`` runs through ``wrapped`` (so that gradients are all-reduced)."""
        if train is None:
            raise MisconfigurationError(
                "no training data: pass fit(model, train_dataloaders=...), a datamodule, or define train_dataloader().")
        step = shard = None
        if strategy is not None:
            shard, step = strategy.distributed_loader, functools.partial(strategy.training_step, wrapped)
            train = map_loaders(train, shard)  # several training loaders: each one sharded
        optimizers, schedulers = parse_optimizers(model.configure_optimizers())
        return cls(module=model, optimizers=optimizers, schedulers=schedulers, precision=Precision(precision, device),
                   train_data=ResumableLoader(as_train_data(train)), val_loaders=val_loaders_of(model, val), device=device,
                   reload=reload, training_step=step, shard=shard)

    def end_workers(self) -> None:
        """Stop the DataLoader workers this fit started (Lightning does when a fit ends, or fails)."""
        self.train_data.close()
        for loader in self.val_loaders:
            end_workers(loader)


def as_loaders(loaders: Any) -> list:
    """One loader, or a list/tuple of them, as a list (None: none)."""
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def val_loaders_of(model, val: Any) -> list:
    return as_loaders(val) if callable(getattr(model, "validation_step", None)) else []  # None: no validation


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


def loss_of(output: Any) -> torch.Tensor | None:
    if output is None or isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "loss" in output:
        return output["loss"]
    raise MisconfigurationError(
        f"training_step must return a loss tensor, a dict with a 'loss' entry, or None (skip the batch); "
        f"received {type(output).__name__}{' with keys ' + str(sorted(output)) if isinstance(output, dict) else ''}."
    )
