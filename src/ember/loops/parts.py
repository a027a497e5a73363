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
    pre_backward: Callable[[torch.Tensor], None] | None = None  # before manual_backward (DDP readies its all-reduce)
    shard_val: Callable[[Any], Any] | None = None  # a validation loader -> this rank's share of it
    before_eval: Callable[[], None] | None = None  # before each validation (DDP: rank 0's buffers everywhere)
    train_batches: int | float | None = None  # an epoch's batches, fixed as fit sets up its data (Lightning's)
    val_limit: int | float | None = None  # limit_val_batches of fit's first validation: later ones keep its count

    @classmethod
    def build(cls, model, train, val, precision: str, device: torch.device, reload=None, strategy: Any = None,
              wrapped: Any = None, distributed_sampler: bool = True) -> "FitParts":
        """With a ``strategy`` (a job of many processes) ``training_step`` runs through ``wrapped`` (so
        that gradients are all-reduced) and, with ``distributed_sampler``, the training and validation
        data are sharded across ranks (validation unshuffled, padded to equal lengths)."""
        if train is None:
            raise MisconfigurationError(
                "no training data: pass fit(model, train_dataloaders=...), a datamodule, or define train_dataloader().")
        step = shard = shard_val = pre_backward = before_eval = None
        if strategy is not None:
            step = functools.partial(strategy.training_step, wrapped)
            if hasattr(strategy, "sync_buffers"):
                before_eval = functools.partial(strategy.sync_buffers, wrapped)
            if hasattr(strategy, "pre_backward"):
                pre_backward = functools.partial(strategy.pre_backward, wrapped)
            if distributed_sampler:
                shard = functools.partial(strategy.distributed_loader, shuffle=True)  # Lightning shuffles training
                shard_val = functools.partial(strategy.distributed_loader, stage="validate")
                train = map_loaders(train, shard)  # several training loaders: each one sharded
        optimizers, schedulers = parse_optimizers(model.configure_optimizers())
        return cls(module=model, optimizers=optimizers, schedulers=schedulers, precision=Precision(precision, device),
                   train_data=ResumableLoader(as_train_data(train)), val_loaders=val_loaders_of(model, val, shard_val),
                   device=device, reload=reload, training_step=step, shard=shard, pre_backward=pre_backward,
                   shard_val=shard_val, before_eval=before_eval)

    def reload_loaders(self) -> None:
        """Fresh loaders from ``reload()`` (the old ones' workers stopped); the counts fixed for the old ones are
        forgotten (``train_batches``, ``val_limit``)."""
        train, val = self.reload()
        self.end_workers()  # the old loaders' persistent workers
        train = map_loaders(train, self.shard) if self.shard else train
        self.train_data = ResumableLoader(as_train_data(train))
        self.val_loaders = val_loaders_of(self.module, val, self.shard_val)
        self.train_batches = self.val_limit = None

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


def val_loaders_of(model, val: Any, shard: Callable[[Any], Any] | None = None) -> list:
    loaders = as_loaders(val) if callable(getattr(model, "validation_step", None)) else []  # None: no validation
    return [shard(loader) for loader in loaders] if shard is not None else loaders


def batch_outputs(output: Any, accum: int, detached: torch.Tensor | None = None) -> dict:
    """What on_train_batch_end receives, as in Lightning: ``{"loss": detached loss (divided by
    accumulate_grad_batches), **other entries}``; ``{}`` when training_step returned None. ``detached``:
    the returned loss, already detached (the loop keeps one for the progress bar)."""
    if output is None:
        return {}
    if isinstance(output, torch.Tensor):
        loss = detached if detached is not None else output.detach()
        return {"loss": loss / accum if accum > 1 else loss}
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
