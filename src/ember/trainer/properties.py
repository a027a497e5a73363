"""What a Trainer tells about its run (Lightning's read-only properties), kept out of trainer.py."""

from __future__ import annotations

import contextlib
import math
import signal
from typing import Any, Iterator

import torch

from ember import distributed
from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.progress.tqdm_progress import ProgressBarCallback
from ember.checkpoint.manager import CheckpointManager
from ember.distributed.env import JobRanks
from ember.loops.combined_loader import as_train_data
from ember.loops.data import length, limit_batches
from ember.loops.precision import Precision
from ember.loops.results import as_float, as_tensor
from ember.trainer.settable import TrainerSettings
from ember.trainer.states import RunningStage, TrainerFn, TrainerState, TrainerStatus


class TrainerFacts(TrainerSettings, JobRanks):
    """Mixed into Trainer: epoch, step, metrics, optimizers, ranks and checkpoint callbacks."""

    # ---------------------------------------------------------------- facts
    @property
    def current_epoch(self) -> int:
        """The epoch being trained; after an epoch's end hooks, the next one (so max_epochs after fit, and
        the stopped epoch + 1 after a stop part-way through it, as Lightning counts; the loop's own
        position, which exact resume uses, is unchanged)."""
        if self.fit_loop is None:
            return 0
        loop = self.fit_loop
        p = loop.progress
        done = (p.epoch_done or loop.ended_part_way) and not loop.in_epoch_end
        return p.epoch + 1 if done else p.epoch

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
        """Training batches per epoch after limit_train_batches (inf for a loader without a length); during fit, the
        count fit set up (a limit set since waits for a reload, as in Lightning)."""
        if self.fit_loop is not None and self.fit_loop.parts.train_batches is not None:
            return self.fit_loop.parts.train_batches
        loader = getattr(self, "_train_loader", None)
        if loader is None:
            return math.inf
        n = limit_batches(self.settings.limit_train_batches, length(as_train_data(loader)))  # several: combined
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
        return {k: as_tensor(v) for k, v in self._hub.callback_metrics().items()}

    def callback_metrics_float(self) -> dict[str, float]:
        return {k: as_float(v) for k, v in self._hub.callback_metrics().items()}

    @property
    def logged_metrics(self) -> dict[str, torch.Tensor]:
        """The values sent to the logger (empty without one)."""
        return {k: as_tensor(v) for k, v in self._hub.logged.items()}

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

    # ---------------------------------------------------------------- Lightning's remaining properties
    @property
    def state(self) -> TrainerState:
        """What the Trainer is doing: ``status`` (initializing, running, finished, interrupted), ``fn`` (the
        method being run or last run) and ``stage`` (the loop running now, None between loops)."""
        current = self._stage()
        stage = None if current == "train" and not self.fitting else _STAGES.get(current or "")  # fit has ended
        last = getattr(self, "_last_fn", None)
        fn = TrainerFn.FITTING if self.fitting else (TrainerFn(last) if last else None)
        if self.fitting or stage is not None:
            status = TrainerStatus.RUNNING
        elif getattr(self, "_interrupted", False):
            status = TrainerStatus.INTERRUPTED
        else:
            status = TrainerStatus.FINISHED if last else TrainerStatus.INITIALIZING
        return TrainerState(status=status, fn=fn, stage=stage)

    @property
    def interrupted(self) -> bool:
        """Whether the last fit/validate/test/predict ended with an error or an interrupt."""
        return self.state.status == TrainerStatus.INTERRUPTED

    @property
    def evaluating(self) -> bool:
        """Whether a validation, sanity-check or test loop is running."""
        return self._stage() in ("validate", "sanity", "test")

    @property
    def received_sigterm(self) -> bool:
        """Whether this process received SIGTERM during the current fit."""
        requests = getattr(self, "_stop_requests", None)
        return requests is not None and requests.signum == signal.SIGTERM

    @property
    def precision(self) -> str:
        """The precision fit runs in: ``"32"``, ``"16-mixed"`` or ``"bf16-mixed"``."""
        return self.settings.precision

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """The GradScaler of ``precision="16-mixed"`` during fit (None otherwise)."""
        plugin = self.precision_plugin
        return plugin.scaler if plugin is not None else None

    @property
    def distributed_sampler_kwargs(self) -> dict | None:
        """``num_replicas`` and ``rank`` of each process's DistributedSampler (None in one process)."""
        if self._parallel is None:
            return None
        return {"num_replicas": self.world_size, "rank": self.global_rank}

    @property
    def enable_validation(self) -> bool:
        """Whether fit validates: it has validation loaders and ``limit_val_batches`` is not 0."""
        loaders = self.fit_loop.parts.val_loaders if self.fit_loop is not None else []
        return bool(loaders) and self.settings.limit_val_batches != 0

    def _batches(self, loaders: list, limit: int | float) -> list[int | float]:
        return [limit_batches(limit, length(loader)) for loader in loaders]

    @property
    def num_val_batches(self) -> list[int | float]:
        """Batches per validation loader after ``limit_val_batches`` (inf for a loader without a length)."""
        loaders = getattr(self, "_stage_loaders", {}).get("validate")
        if loaders is None:
            loaders = self.fit_loop.parts.val_loaders if self.fit_loop is not None else []
        return self._batches(loaders, self.settings.limit_val_batches)

    @property
    def num_sanity_val_batches(self) -> list[int | float]:
        """Batches the sanity check runs per validation loader (``num_sanity_val_steps=-1``: all of them)."""
        steps = self.settings.num_sanity_val_steps
        return [n if steps == -1 else min(steps, n) for n in self.num_val_batches]

    @property
    def num_test_batches(self) -> list[int | float]:
        """Batches per test loader after ``limit_test_batches``."""
        return self._batches(self.test_dataloaders or [], self.settings.limit_test_batches)

    @property
    def num_predict_batches(self) -> list[int | float]:
        """Batches per predict loader after ``limit_predict_batches``."""
        return self._batches(self.predict_dataloaders or [], self.settings.limit_predict_batches)

    @property
    def test_dataloaders(self) -> list | None:
        """The loaders of the last ``test`` call."""
        return getattr(self, "_stage_loaders", {}).get("test")

    @property
    def predict_dataloaders(self) -> list | None:
        """The loaders of the last ``predict`` call."""
        return getattr(self, "_stage_loaders", {}).get("predict")

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on global rank 0 only.

        Args:
            *args: passed to ``print``.
            **kwargs: passed to ``print``.
        """
        if self.is_global_zero:
            print(*args, **kwargs)

    @contextlib.contextmanager
    def init_module(self, empty_init: bool | None = None) -> Iterator[None]:
        """Build the model inside this block to create its tensors directly on the Trainer's device.

        Args:
            empty_init: accepted for Lightning's signature; parameters are always initialised.
        """
        with self.device:
            yield


_STAGES = {"train": RunningStage.TRAINING, "sanity": RunningStage.SANITY_CHECKING,
           "validate": RunningStage.VALIDATING, "test": RunningStage.TESTING, "predict": RunningStage.PREDICTING}
