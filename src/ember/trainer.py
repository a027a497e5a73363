"""ember.Trainer: settings, fit(), and the run's checkpoints (what is saved, where it is found)."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import replace
from typing import Iterable

import torch

from ember import compat, distributed
from ember.callbacks.base import Callback
from ember.hooks import Hooks, build_callbacks, keyed
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.progress_bar import replaces_default_bar
from ember.checkpoint import lightning
from ember.checkpoint import state as run_state
from ember.checkpoint.io import load_from
from ember.checkpoint.lookup import resolve_ckpt_path
from ember.checkpoint.manager import CheckpointManager
from ember.checkpoint.store import resolve
from ember.checkpoint.writer import CheckpointWriter
from ember.errors import CheckpointError, MisconfigurationError
from ember import loggers as _loggers
from ember.loop import FitLoop, FitParts, Progress
from ember.metrics import as_float
from ember.precision import Precision
from ember.preemption import StopRequests
from ember.progress import ProgressBar
from ember.settings import FitSettings, device_for
from ember.distributed import sharding
from ember.distributed.select import strategy_for
from ember.distributed.sharded_saves import ShardedWriter
from ember.checkpoint.sharded import is_sharded_checkpoint


class Trainer:
    """Fits an ember.Module, checkpointing as it goes.

    Checkpointing is on by default: a ``ModelCheckpoint`` saves after every epoch to
    ``<default_root_dir>/checkpoints/`` keeping the latest. ``default_root_dir`` defaults to the
    working directory (the seed's name ``default_save_path`` works too). ``logger``: True (a CSVLogger
    writing ``<default_root_dir>/logs/version_N/``), False, a Logger or a list of them; with loggers
    given, checkpoints go to ``<first logger's log_dir>/checkpoints/`` as in Lightning. Fit settings are checked in
    ``ember.settings.FitSettings``; old argument names are translated in ``ember.compat``.
    """

    def __init__(
        self,
        max_epochs: int | None = None,
        max_steps: int | None = None,
        default_root_dir: str | os.PathLike | None = None,
        enable_checkpointing: bool = True,
        checkpoint_callback: ModelCheckpoint | bool | None = None,
        callbacks: Callback | Iterable[Callback] | None = None,
        resume_from_checkpoint: str | os.PathLike | None = None,
        precision: str | int = "32",
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        limit_train_batches: int | float = 1.0,
        limit_val_batches: int | float = 1.0,
        check_val_every_n_epoch: int = 1,
        val_check_interval: int | float = 1.0,
        enable_progress_bar: bool = True,
        logger: _loggers.Logger | Iterable[_loggers.Logger] | bool = True,
        log_every_n_steps: int = 50,
        accelerator: str = "auto",
        devices: int | str | list[int] | None = "auto",
        num_nodes: int = 1,
        strategy: str | distributed.DDPStrategy = "auto",
        default_save_path: str | os.PathLike | None = None,
        storage_options: dict | None = None,
    ) -> None:
        self.default_root_dir = compat.root_dir(default_root_dir, default_save_path)
        self.settings = FitSettings(
            max_epochs=max_epochs, max_steps=max_steps, accumulate_grad_batches=accumulate_grad_batches,
            gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm,
            limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
            check_val_every_n_epoch=check_val_every_n_epoch, val_check_interval=val_check_interval,
            log_every_n_steps=log_every_n_steps, precision=precision)
        self.strategy = strategy_for(strategy, accelerator, devices, num_nodes)  # may start the other processes
        self.device = self.strategy.setup() if self.strategy is not None else device_for(accelerator)
        self.storage_options = storage_options
        self.resume_from_checkpoint = resume_from_checkpoint
        self.callbacks = build_callbacks(enable_checkpointing, checkpoint_callback, callbacks)
        self.loggers = _loggers.resolve_loggers(logger, self.default_root_dir, storage_options)
        self._default_ckpt_dir = lambda: _loggers.checkpoint_dir(logger, self.loggers, self.default_root_dir)
        if not self.is_global_zero:  # the progress bar runs on rank 0 only (and loggers log there only)
            enable_progress_bar = False
        self._bar = ProgressBar(enable_progress_bar and not replaces_default_bar(self.callbacks))
        self.checkpoint_writer = (ShardedWriter(storage_options) if self._sharded else CheckpointWriter())
        self.module = None
        self.fit_loop: FitLoop | None = None
        self.ckpt_path: str | None = None
        self._run: run_state.RunState | None = None
        self._stop_requests = StopRequests()
        self._failing = False  # fit is failing: saves gather nothing from other ranks

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

    # ---------------------------------------------------------------- facts
    @property
    def logger(self):
        """The first logger (None without loggers); setting it replaces every logger."""
        return self.loggers[0] if self.loggers else None

    @logger.setter
    def logger(self, value) -> None:
        self.loggers = [] if value is None else [value]

    @property
    def log_dir(self) -> str:
        """Where this run's files go: the first logger's ``log_dir``, else ``default_root_dir``."""
        return _loggers.run_dir(self.logger, self.default_root_dir)

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
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        """The latest value of every logged metric (epoch means for epoch-level ones)."""
        return {k: torch.tensor(v) for k, v in self.callback_metrics_float().items()}

    def callback_metrics_float(self) -> dict[str, float]:
        return {k: as_float(v) for k, v in self.fit_loop.metrics.items()} if self.fit_loop is not None else {}

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return self.fit_loop.parts.optimizers if self.fit_loop is not None else []

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
    def _sharded(self) -> bool:
        """Whether the weights and optimizer states are sharded across ranks (FSDP): checkpoints are folders
        written by every rank."""
        return hasattr(self.strategy, "state_for_save")

    @property
    def checkpoint_callbacks(self) -> list[ModelCheckpoint]:
        return [cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        cbs = self.checkpoint_callbacks
        return cbs[0] if cbs else None

    @property
    def checkpoint_managers(self) -> list[CheckpointManager]:
        """Every callback's checkpoint manager (``callback.manager``), whatever the callback's class."""
        return [m for m in (getattr(cb, "manager", None) for cb in self.callbacks) if isinstance(m, CheckpointManager)]

    # ---------------------------------------------------------------- fit
    def fit(self, model, train_dataloaders=None, val_dataloaders=None, ckpt_path: str | os.PathLike | None = None):
        """Train ``model``; ``ckpt_path`` (a path or URL, ``"last"`` or ``"best"``) resumes a run."""
        from ember.module import Module

        if not isinstance(model, Module):
            raise MisconfigurationError(f"fit() needs an ember.Module; received {type(model).__name__}.")
        ckpt_path = compat.resume_path(ckpt_path, self.resume_from_checkpoint)
        self.module = model
        model.trainer = self
        model.to(self.device)
        strategy = self.strategy
        wrapped = strategy.setup_module(model, self.device) if strategy is not None else model
        hooks = Hooks(model, self.callbacks, self.checkpoint_writer.snapshot_barrier, self)
        parts = FitParts.build(model, train_dataloaders, val_dataloaders, self.settings.precision, self.device,
                               strategy, wrapped)
        loop = self.fit_loop = FitLoop(
            self.settings, parts, call=hooks, barrier=self.checkpoint_writer.snapshot_barrier,
            stop_requested=self._stop_requested, bar=self._bar,
            logger=_loggers.LoggerGroup(self.loggers) if self.loggers and self.is_global_zero else None)
        loop.reduce = strategy.reduce if strategy is not None else None  # self.log(..., sync_dist=True)
        self._run = run_state.RunState(
            model=wrapped, loop=loop, optimizers=loop.parts.optimizers,
            lr_schedulers=[c.scheduler for c in loop.parts.schedulers], precision=loop.parts.precision,
            callbacks=keyed(self.callbacks))
        model.__dict__["_logged"] = loop.log
        _loggers.LoggerGroup(self.loggers).start_fit(model)  # every rank: they agree on the version folders
        default_dir = self._default_ckpt_dir()
        from_rank0 = strategy.broadcast_object if strategy is not None else None
        for manager in self.checkpoint_managers:
            manager.bind(default_dir, self.checkpoint_writer, lambda: self.is_global_zero, from_rank0)
        self._failing = False
        try:
            with strategy.failure_guard() if strategy is not None else contextlib.nullcontext():
                self.ckpt_path = self._on_rank0(lambda: resolve_ckpt_path(
                    ckpt_path, self.checkpoint_managers, default_dir, self.storage_options))
                if self.ckpt_path is not None:
                    self._restore(self.ckpt_path)
                with self._stop_requests:
                    for hook in ("on_fit_start", "on_train_start"):
                        hooks(hook)
                    loop.run()
                    for hook in ("on_train_end", "on_fit_end"):
                        hooks(hook)
                self.checkpoint_writer.wait()  # fit returns only once the last save is committed
                if strategy is not None:
                    strategy.barrier()  # ... on every rank: the files are there for all of them
        except BaseException as e:
            self._failing = True  # no collectives from here: a peer may be gone
            self._wait_quietly(e)
            for cb in self.callbacks:
                cb.on_exception(self, model, e)
            raise
        finally:
            model.__dict__["_logged"] = None
            if self.is_global_zero:
                _loggers.LoggerGroup(self.loggers).finalize("success" if sys.exc_info()[0] is None else "failed")

    def _wait_quietly(self, primary: BaseException) -> None:
        """Let an in-flight save finish while another error propagates; report its failure, if any."""
        try:
            self.checkpoint_writer.wait()
        except BaseException as e:  # noqa: BLE001
            if e is not primary:
                reason = str(e) or repr(e)
                print(f"ember: a background checkpoint save also failed: {reason}", file=sys.stderr, flush=True)

    def _on_rank0(self, fn):
        """``fn()`` run on rank 0 and its result (or its error) on every rank (a collective)."""
        if self.strategy is None:
            return fn()
        try:
            outcome = (True, fn()) if self.is_global_zero else None
        except Exception as e:  # noqa: BLE001 - every rank raises it
            outcome = (False, e)
        ok, value = self.strategy.broadcast_object(outcome)
        if not ok:
            raise value
        return value

    def _stop_requested(self) -> bool:
        """At a step boundary: if a stop signal arrived, save where we are and ask the loop to stop.

        In a job of many processes the signal may reach one rank (or a callback may stop one rank):
        every rank learns it here, at the same step, and all stop together."""
        requested = self._stop_requests.requested
        if self.strategy is not None:
            flags = self.strategy.reduce(torch.tensor([int(requested), int(self.fit_loop.should_stop)]), "max")
            requested = bool(flags[0])
            if flags[1]:
                self.fit_loop.should_stop = True
        if not requested:
            return False
        if not self.fit_loop.should_stop:
            self.fit_loop.should_stop = True
            for manager in self.checkpoint_managers:
                manager.save_for_resume(self.dump_checkpoint)
            if self.is_global_zero:
                print(f"ember: stop signal {self._stop_requests.signum or ''} received; saved step {self.global_step} "
                      "and stopped. Continue with fit(ckpt_path='last').", flush=True)
        return True

    # ---------------------------------------------------------------- checkpoints
    def dump_checkpoint(self, weights_only: bool = False) -> dict:
        """The checkpoint dict of the current training state (after every on_save_checkpoint hook)."""
        if self.module is None:
            raise MisconfigurationError("save_checkpoint() needs a model: call trainer.fit(model) first.")
        run = self._run or run_state.RunState(model=self.module, loop=Progress())  # a model set without fit
        run = replace(run, callbacks=keyed(self.callbacks))  # callbacks may be added between fits
        if self._failing and self._sharded:
            raise CheckpointError("a sharded (FSDP) checkpoint is written by every rank together, so none can be "
                                  "saved while a rank is failing; resume from the last checkpoint saved before.")
        distributed_run = self.strategy is not None and not self._failing
        ckpt = run_state.collect(run, weights_only, self.strategy.gather_loop_state if distributed_run else None,
                                 self.strategy.state_for_save if self._sharded else None)
        module = run_state.unwrap_model(self.module)
        if not weights_only:
            for cb in self.callbacks:
                cb.on_save_checkpoint(self, module, ckpt)
        module.on_save_checkpoint(ckpt)
        return ckpt

    def save_checkpoint(self, filepath: str | os.PathLike, weights_only: bool = False, blocking: bool = True) -> None:
        """Write the current state to ``filepath`` (a path or URL), atomically: complete or absent.

        ``blocking=False`` returns once the state is copied; a background thread writes and commits
        it. At most one save is in flight: the next one waits for it. ``wait_for_checkpoints()``
        waits for it and raises its error if it failed. Only the global-zero process writes.
        """
        state = self.dump_checkpoint(weights_only)
        if self.is_global_zero or self._sharded:  # a sharded checkpoint: every rank writes its shards
            self.checkpoint_writer.save(state, resolve(filepath, self.storage_options), blocking=blocking)

    def wait_for_checkpoints(self) -> None:
        """Wait until every save in flight is committed; raise the error of one that failed."""
        self.checkpoint_writer.wait()

    def _restore(self, location: str) -> None:
        module = run_state.unwrap_model(self.module)
        if self._sharded and is_sharded_checkpoint(location):  # every rank reads its own shards, resharded
            from ember.checkpoint.sharded import load_sharded

            ckpt = load_sharded(self.strategy.state_for_save(module, self._run.optimizers), location,
                                storage_options=self.storage_options)
        else:
            ckpt = load_from(*resolve(location, self.storage_options), map_location="cpu")
            if lightning.is_lightning(ckpt):  # a file written by PyTorch Lightning: its layout, translated
                ckpt = lightning.to_ember(ckpt, path=location)
        ckpt = sharding.optimizer_states_for(ckpt, module, self._run.optimizers, self._sharded)
        run_state.check_resumable(ckpt, location, self._run)
        module.on_load_checkpoint(ckpt)
        run_state.restore(self._run, ckpt, location, self.strategy.load_state if self._sharded else None)
        for cb in self.callbacks:
            cb.on_load_checkpoint(self, module, ckpt)
