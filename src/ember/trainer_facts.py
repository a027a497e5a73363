"""What a Trainer tells about its run (Lightning's read-only properties), kept out of trainer.py."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ember import distributed
from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint.manager import CheckpointManager
from ember.data import length, limit_batches
from ember.metrics import as_float
from ember.precision import Precision


def _tensor(v) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.tensor(v)


class TrainerFacts:
    """Mixed into Trainer: epoch, step, metrics, optimizers, ranks and checkpoint callbacks."""

    # ---------------------------------------------------------------- settings that may change between fits
    @property
    def max_epochs(self) -> int | None:
        return self.settings.max_epochs

    @max_epochs.setter
    def max_epochs(self, value: int | None) -> None:
        self.settings = replace(self.settings, max_epochs=value)

    @property
    def max_steps(self) -> int | None:
        return self.settings.max_steps

    @max_steps.setter
    def max_steps(self, value: int | None) -> None:
        self.settings = replace(self.settings, max_steps=value)

    @property
    def min_epochs(self) -> int | None:
        return self.settings.min_epochs

    @property
    def min_steps(self) -> int | None:
        return self.settings.min_steps

    @property
    def num_sanity_val_steps(self) -> int:
        return self.settings.num_sanity_val_steps

    # ---------------------------------------------------------------- facts
    @property
    def current_epoch(self) -> int:
        """The epoch being trained; after an epoch's end hooks, the next one (so max_epochs after fit)."""
        if self.fit_loop is None:
            return 0
        p = self.fit_loop.progress
        return p.epoch + 1 if p.epoch_done and not self.fit_loop.in_epoch_end else p.epoch

    @property
    def global_step(self) -> int:
        return self.fit_loop.progress.global_step if self.fit_loop is not None else 0

    @property
    def should_stop(self) -> bool:
        return self.fit_loop is not None and self.fit_loop.should_stop

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        if self.fit_loop is not None:
            self.fit_loop.should_stop = bool(value)

    @property
    def optimizer_stepped(self) -> bool:
        """Whether the batch that just ended took an optimizer step (False inside an accumulation window)."""
        return self.fit_loop is not None and self.fit_loop.optimizer_stepped

    @property
    def is_last_batch(self) -> bool:
        """Whether the batch being trained is the epoch's last (known for loaders with a length)."""
        return self.fit_loop is not None and self.fit_loop.is_last_batch

    def _stage(self) -> str | None:
        hooks = getattr(self, "_hooks", None)
        return hooks.stage if hooks is not None else None

    @property
    def progress_bar_callback(self):
        """The progress bar: a progress-bar callback (``TQDMProgressBar``) if one was given, else ember's
        own bar while it is enabled, else None (``enable_progress_bar=False``, or not rank 0)."""
        from ember.callbacks.progress_bar import ProgressBarCallback

        for cb in self.callbacks:
            if isinstance(cb, ProgressBarCallback):
                return cb
        bar = getattr(self, "_bar", None)
        return bar if bar is not None and bar.enabled else None

    @property
    def training(self) -> bool:
        return self._stage() == "train"

    @property
    def validating(self) -> bool:
        return self._stage() in ("validate", "sanity")

    @property
    def testing(self) -> bool:
        return self._stage() == "test"

    @property
    def predicting(self) -> bool:
        return self._stage() == "predict"

    @property
    def num_training_batches(self) -> int | float:
        """Training batches per epoch after limit_train_batches (inf for a loader without a length)."""
        loader = getattr(self, "_train_loader", None)
        if loader is None:
            return math.inf
        n = limit_batches(self.settings.limit_train_batches, length(loader))
        return n

    @property
    def estimated_stepping_batches(self) -> int | float:
        """The optimizer steps fit will take, as Lightning estimates them (for OneCycleLR and the like);
        usable in configure_optimizers."""
        s = self.settings
        per_epoch = self.num_training_batches
        total = math.inf
        if not math.isinf(per_epoch) and s.max_epochs is not None and s.max_epochs >= 0:
            total = math.ceil(per_epoch / s.accumulate_grad_batches) * max(s.max_epochs, 1)
        return min(total, s.max_steps) if s.max_steps is not None else total

    @property
    def train_dataloader(self):
        """The loader fit trains on (after fit has asked the datamodule or module for it)."""
        return getattr(self, "_train_loader", None)

    @property
    def val_dataloaders(self):
        """fit's validation loader (a list when there are several)."""
        if self.fit_loop is None or not self.fit_loop.parts.val_loaders:
            return None
        loaders = self.fit_loop.parts.val_loaders
        return loaders[0] if len(loaders) == 1 else loaders

    @property
    def lightning_module(self):
        return self.module

    @property
    def model(self):
        return self.module

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        """The latest value of every logged metric (epoch values for epoch-level ones), as Lightning's."""
        return {k: _tensor(v) for k, v in self._hub.callback_metrics().items()}

    def callback_metrics_float(self) -> dict[str, float]:
        return {k: as_float(v) for k, v in self._hub.callback_metrics().items()}

    @property
    def logged_metrics(self) -> dict[str, torch.Tensor]:
        """The values sent to the logger (empty without one)."""
        return {k: _tensor(v) for k, v in self._hub.logged.items()}

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """The values logged with ``prog_bar=True``."""
        return {k: as_float(v) for k, v in self._hub.pbar.items()}

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return self.fit_loop.parts.optimizers if self.fit_loop is not None else []

    @property
    def lr_scheduler_configs(self) -> list:
        return list(self.fit_loop.parts.schedulers) if self.fit_loop is not None else []

    @property
    def lr_schedulers(self) -> list:
        return [c.scheduler for c in self.fit_loop.parts.schedulers] if self.fit_loop is not None else []

    @property
    def precision_plugin(self) -> Precision | None:
        return self.fit_loop.parts.precision if self.fit_loop is not None else None

    @property
    def is_global_zero(self) -> bool:
        """Whether this process writes the run's files (rank 0 of a torch.distributed job, or alone)."""
        return distributed.is_global_zero()

    @property
    def global_rank(self) -> int:
        return distributed.global_rank()

    @property
    def local_rank(self) -> int:
        return distributed.local_rank()

    @property
    def world_size(self) -> int:
        return distributed.world_size()

    @property
    def strategy(self):
        """The strategy object, in every run: a ``DDPStrategy`` / ``FSDPStrategy`` in a job of many
        processes, else a ``SingleDeviceStrategy`` (``root_device``, ``world_size``, ``global_rank``,
        ``local_rank``, ``is_global_zero``, ``barrier()``, ``broadcast()``, ``reduce()``)."""
        return self._parallel if self._parallel is not None else self._single

    @property
    def num_devices(self) -> int:
        """Processes (devices) per machine: 1 for one process."""
        job = distributed.JobEnv.detect() if self._parallel is not None else None
        return job.local_world_size if job is not None else 1

    @property
    def node_rank(self) -> int:
        """This machine's rank among the job's machines (0 on one machine)."""
        return self.strategy.node_rank

    @property
    def device_ids(self) -> list[int]:
        """The device indices used on this machine (Lightning's: ``[0, 1]`` for ``devices=2``, the list
        given for ``devices=[1, 3]``)."""
        if isinstance(self.devices, (list, tuple)) and len(self.devices) == self.num_devices:
            return list(self.devices)
        return list(range(self.num_devices))

    @property
    def checkpoint_callbacks(self) -> list[ModelCheckpoint]:
        return [cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        cbs = self.checkpoint_callbacks
        return cbs[0] if cbs else None

    @property
    def early_stopping_callbacks(self) -> list[EarlyStopping]:
        return [cb for cb in self.callbacks if isinstance(cb, EarlyStopping)]

    @property
    def early_stopping_callback(self) -> EarlyStopping | None:
        cbs = self.early_stopping_callbacks
        return cbs[0] if cbs else None

    @property
    def checkpoint_managers(self) -> list[CheckpointManager]:
        """Every callback's checkpoint manager (``callback.manager``), whatever the callback's class."""
        return [m for m in (getattr(cb, "manager", None) for cb in self.callbacks) if isinstance(m, CheckpointManager)]
