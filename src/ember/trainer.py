"""ember.Trainer: settings, fit/validate/test/predict, and the run's checkpoints (what is saved, where it is found)."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import replace
from typing import Any, Iterable

import torch

from ember import compat
from ember.callbacks.base import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import lightning
from ember.checkpoint import state as run_state
from ember.checkpoint.io import load_from
from ember.checkpoint.lookup import resolve_ckpt_path
from ember.checkpoint.store import resolve
from ember.checkpoint.writer import CheckpointWriter
from ember.datamodule import loaders_for, split_datamodule
from ember.errors import CheckpointError, MisconfigurationError
from ember.evaluation import LogSink
from ember.hooks import Hooks, build_callbacks, keyed
from ember import loggers as _loggers
from ember.callbacks.progress_bar import replaces_default_bar
from ember.checkpoint.sharded import is_sharded_checkpoint
from ember.distributed import sharding
from ember.distributed.select import strategy_for
from ember.distributed.sharded_saves import ShardedWriter
from ember.distributed.single import SingleDeviceStrategy
from ember.loop import FitLoop, FitParts, Progress
from ember.metrics import MetricsHub
from ember.preemption import StopRequests
from ember.progress import ProgressBar
from ember.settings import FitSettings, device_for
from ember import trainer_args, trainer_eval
from ember.trainer_facts import TrainerFacts


class Trainer(TrainerFacts):
    """Fits an ember.Module, checkpointing as it goes; validates, tests and predicts (Lightning's API).

    Checkpointing is on by default: a ``ModelCheckpoint`` saves after every epoch to
    ``<default_root_dir>/checkpoints/`` keeping the latest. ``default_root_dir`` defaults to the
    working directory (the seed's name ``default_save_path`` works too). Fit settings are checked in
    ``ember.settings.FitSettings``; old argument names are translated in ``ember.compat``; Lightning
    arguments ember does not implement are refused by name (``ember.trainer_args``).
    ``reduce(tensor, op)``, when set (distributed runs), combines ``self.log(..., sync_dist=True)`` values.
    """

    def __init__(
        self,
        accelerator: str = "auto",
        strategy: Any = "auto",
        devices: Any = "auto",
        num_nodes: int = 1,
        precision: str | int = "32",
        logger: _loggers.Logger | Iterable[_loggers.Logger] | bool | None = True,
        callbacks: Callback | Iterable[Callback] | None = None,
        fast_dev_run: bool | int = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int | None = None,
        min_steps: int | None = None,
        limit_train_batches: int | float = 1.0,
        limit_val_batches: int | float = 1.0,
        limit_test_batches: int | float = 1.0,
        limit_predict_batches: int | float = 1.0,
        val_check_interval: int | float = 1.0,
        check_val_every_n_epoch: int = 1,
        num_sanity_val_steps: int = 2,
        log_every_n_steps: int = 50,
        enable_checkpointing: bool = True,
        enable_progress_bar: bool = True,
        enable_model_summary: bool = True,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        profiler: Any = None,
        detect_anomaly: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: str | os.PathLike | None = None,
        checkpoint_callback: ModelCheckpoint | bool | None = None,
        resume_from_checkpoint: str | os.PathLike | None = None,
        default_save_path: str | os.PathLike | None = None,
        storage_options: dict | None = None,
        use_distributed_sampler: bool = True,
        **kwargs: Any,
    ) -> None:
        trainer_args.check_unknown(kwargs)
        trainer_args.check_profiler(profiler)
        trainer_args.apply_backend_flags(deterministic, benchmark)
        self.fast_dev_run = n = trainer_args.fast_dev_run_batches(fast_dev_run)
        if n:  # Lightning: n batches of each stage, one epoch, no checkpoints or loggers
            (max_epochs, max_steps, num_sanity_val_steps, val_check_interval, check_val_every_n_epoch, logger,
             enable_checkpointing, checkpoint_callback) = (1, n, 0, 1.0, 1, None, False, False)
            limit_train_batches = limit_val_batches = limit_test_batches = limit_predict_batches = n
            callbacks = _without_checkpoints(callbacks)
        self.default_root_dir = compat.root_dir(default_root_dir, default_save_path)
        self.settings = FitSettings(
            max_epochs=max_epochs, max_steps=max_steps, accumulate_grad_batches=accumulate_grad_batches,
            gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm or "norm",
            limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches,
            check_val_every_n_epoch=check_val_every_n_epoch, val_check_interval=val_check_interval,
            log_every_n_steps=log_every_n_steps, precision=precision, num_sanity_val_steps=num_sanity_val_steps,
            min_epochs=min_epochs, min_steps=min_steps, inference_mode=inference_mode,
            reload_dataloaders_every_n_epochs=reload_dataloaders_every_n_epochs)
        self.accelerator, self.devices, self.num_nodes = accelerator, devices, num_nodes
        self._parallel = strategy_for(strategy, accelerator, devices, num_nodes)  # may start the other processes
        self.device = self._parallel.setup() if self._parallel is not None else device_for(accelerator)
        self._single = SingleDeviceStrategy(self.device)  # trainer.strategy of a one-process run
        self.use_distributed_sampler = bool(use_distributed_sampler)
        self.detect_anomaly = bool(detect_anomaly)
        self.enable_model_summary = bool(enable_model_summary)
        self.storage_options = storage_options
        self.resume_from_checkpoint = resume_from_checkpoint
        self.callbacks = build_callbacks(enable_checkpointing, checkpoint_callback, callbacks)
        self._set_outputs(logger, enable_progress_bar)
        self.checkpoint_writer = (ShardedWriter(storage_options, getattr(self._parallel, "timeout", None))
                                  if self._sharded else CheckpointWriter())
        self._hub = MetricsHub(None)
        self.reduce = self._parallel.reduce if self._parallel is not None else None  # self.log(..., sync_dist=True)
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        self.module = self.datamodule = self.ckpt_path = None
        self.fit_loop: FitLoop | None = None
        self.sanity_checking = False
        self._run: run_state.RunState | None = None
        self._hooks: Hooks | None = None
        self._train_loader = None
        self._stop_requests = StopRequests()
        self._failing = False  # fit is failing: saves gather nothing from other ranks
        self.fitting = False  # inside fit() (Lightning's trainer.state.fn == "fit")

    def _set_outputs(self, logger, enable_progress_bar: bool) -> None:
        """The loggers (they log on rank 0 only) and the progress bar (rank 0 only)."""
        self.loggers = _loggers.resolve_loggers(logger, self.default_root_dir, self.storage_options)
        self._default_ckpt_dir = lambda: _loggers.checkpoint_dir(logger, self.loggers, self.default_root_dir)
        enabled = enable_progress_bar and self.is_global_zero and not replaces_default_bar(self.callbacks)
        self._bar = ProgressBar(enabled)

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
    def _sharded(self) -> bool:
        """Whether the weights and optimizer states are sharded across ranks (FSDP): checkpoints are
        folders written by every rank."""
        return hasattr(self._parallel, "state_for_save")

    # ---------------------------------------------------------------- fit
    def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None,
            ckpt_path: str | os.PathLike | None = None):
        """Train ``model``; ``ckpt_path`` (a path or URL, ``"last"`` or ``"best"``) resumes a run.
        Loaders come from the arguments, else ``datamodule``, else the module's ``*_dataloader()``."""
        train_dataloaders, datamodule = split_datamodule(train_dataloaders, datamodule)
        ckpt_path = compat.resume_path(ckpt_path, self.resume_from_checkpoint)
        hooks = self._attach(model, datamodule)
        strategy, self._failing, self.fitting = self._parallel, False, True
        try:
            with strategy.failure_guard() if strategy is not None else contextlib.nullcontext():
                with self._stop_requests, _anomaly(self.detect_anomaly):
                    self._fit(model, hooks, train_dataloaders, val_dataloaders, ckpt_path)
                self.checkpoint_writer.wait()  # fit returns only once the last save is committed
                if strategy is not None:
                    strategy.barrier()  # ... on every rank: the files are there for all of them
        except BaseException as e:
            self._failing = True  # no collectives from here: a peer may be gone
            self._wait_quietly(e)
            hooks("on_exception", e)
            raise
        finally:
            model.__dict__["_logged"] = None
            self.fitting = False
            if self.is_global_zero:
                group = _loggers.LoggerGroup(self.loggers)
                group.flush()
                group.finalize("success" if sys.exc_info()[0] is None else "failed")

    def _fit(self, model, hooks: Hooks, train, val, ckpt_path) -> None:
        dm = self.datamodule
        trainer_eval.setup(self, hooks, "fit")
        train = self._train_loader = loaders_for("fit", train, dm, model)
        val = loaders_for("validate", val, dm, model) if hasattr(model, "validation_step") else val
        reload = lambda: (loaders_for("fit", None, dm, model), loaders_for("validate", None, dm, model))  # noqa: E731
        strategy = self._parallel
        wrapped = strategy.setup_module(model, self.device) if strategy is not None else model  # before the optimizers
        parts = FitParts.build(model, train, val, self.settings.precision, self.device, reload=reload,
                               strategy=strategy, wrapped=wrapped, distributed_sampler=self.use_distributed_sampler)
        loop = self.fit_loop = FitLoop(
            self.settings, parts, hooks=hooks, barrier=self.checkpoint_writer.snapshot_barrier,
            stop_requested=self._stop_requested, hub=self._hub, sink=self._sink, bar=self._bar, reduce=self.reduce)
        self._run = run_state.RunState(
            model=wrapped, loop=loop, optimizers=loop.parts.optimizers,
            lr_schedulers=[c.scheduler for c in loop.parts.schedulers], precision=loop.parts.precision,
            callbacks=keyed(self.callbacks))
        _loggers.LoggerGroup(self.loggers).start_fit(model)  # every rank: they agree on the version folders
        default_dir = self._default_ckpt_dir()
        from_rank0 = strategy.broadcast_object if strategy is not None else None
        for manager in self.checkpoint_managers:
            manager.bind(default_dir, self.checkpoint_writer, lambda: self.is_global_zero, from_rank0)
        self.ckpt_path = self._on_rank0(lambda: resolve_ckpt_path(
            ckpt_path, self.checkpoint_managers, default_dir, self.storage_options))
        if self.ckpt_path is not None:
            self._restore(self.ckpt_path)
        hooks("on_fit_start")
        if self.enable_model_summary and self.is_global_zero and not any(
                "ModelSummary" in type(cb).__name__ for cb in self.callbacks):
            trainer_args.log_summary(model)
        self.sanity_checking = True
        try:
            loop.sanity_check()
        finally:
            self.sanity_checking = False
        hooks("on_train_start")
        loop.run()
        hooks("on_train_end")
        hooks("on_fit_end")
        trainer_eval.teardown(self, hooks, "fit")

    def _attach(self, model, datamodule) -> Hooks:
        """Connect the model (and datamodule) to this Trainer for one fit/validate/test/predict."""
        from ember.module import Module

        if not isinstance(model, Module):
            raise MisconfigurationError(f"expected an ember.LightningModule; received {type(model).__name__}.")
        self.module, self.datamodule = model, datamodule
        model.trainer = self
        if datamodule is not None:
            datamodule.trainer = self
        model.to(self.device)
        self._hub.reset()
        self._hub.logger = _loggers.LoggerGroup(self.loggers) if self.loggers and self.is_global_zero else None
        self._hub.has_loggers = bool(self.loggers)
        self.callbacks = trainer_args.with_module_callbacks(self.callbacks, model)
        hooks = self._hooks = Hooks(model, self.callbacks, self.checkpoint_writer.snapshot_barrier, self)
        hooks.datamodule = datamodule
        self._sink = LogSink(hooks)
        model.__dict__["_logged"] = self._sink
        return hooks

    # ---------------------------------------------------------------- evaluation
    def validate(self, model=None, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None):
        """Run one validation pass; returns ``[{metric: value}]``, one dict per loader (Lightning's shape).
        ``ckpt_path``: None (the model as it is), ``"best"``, ``"last"`` or a path: its weights are loaded."""
        return trainer_eval.evaluate(self, "validate", model, dataloaders, ckpt_path, verbose, datamodule)

    def test(self, model=None, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None):
        """Run the test loop (``test_step``); returns ``[{metric: value}]``, one dict per loader."""
        return trainer_eval.evaluate(self, "test", model, dataloaders, ckpt_path, verbose, datamodule)

    def predict(self, model=None, dataloaders=None, datamodule=None, return_predictions: bool | None = None,
                ckpt_path=None):
        """Run ``predict_step`` over the loaders; returns its outputs (a list per loader when several)."""
        return trainer_eval.evaluate(self, "predict", model, dataloaders, ckpt_path, False, datamodule,
                                     return_predictions=True if return_predictions is None else return_predictions)

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
        if self._parallel is None:
            return fn()
        try:
            outcome = (True, fn()) if self.is_global_zero else None
        except Exception as e:  # noqa: BLE001 - every rank raises it
            outcome = (False, e)
        ok, value = self._parallel.broadcast_object(outcome)
        if not ok:
            raise value
        return value

    def _stop_requested(self) -> bool:
        """At a step boundary: if a stop signal arrived, save where we are and ask the loop to stop.

        In a job of many processes the signal may reach one rank (or a callback may stop one rank):
        every rank learns it here, at the same step, and all stop together."""
        requested = self._stop_requests.requested
        if self._parallel is not None:
            flags = self._parallel.reduce(torch.tensor([int(requested), int(self.fit_loop.should_stop)]), "max")
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
        distributed_run = self._parallel is not None and not self._failing
        ckpt = run_state.collect(run, weights_only, self._parallel.gather_loop_state if distributed_run else None,
                                 self._parallel.state_for_save if self._sharded else None)
        trainer_eval.dump_datamodule(self.datamodule, ckpt)
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
        waits for it and raises its error if it failed. Only the global-zero process writes; in a job of
        many processes call it on every rank (a blocking save returns once the file is there for all).
        """
        state = self.dump_checkpoint(weights_only)
        if self.is_global_zero or self._sharded:  # a sharded checkpoint: every rank writes its shards
            self.checkpoint_writer.save(state, resolve(filepath, self.storage_options), blocking=blocking)
        if blocking and self._parallel is not None:
            self._parallel.barrier()  # as Lightning: on return the file is there for every rank to read

    def wait_for_checkpoints(self) -> None:
        """Wait until every save in flight is committed; raise the error of one that failed."""
        self.checkpoint_writer.wait()

    def _restore(self, location: str) -> None:
        module = run_state.unwrap_model(self.module)
        if self._sharded and is_sharded_checkpoint(location):  # every rank reads its own shards, resharded
            from ember.checkpoint.sharded import load_sharded

            ckpt = load_sharded(self._parallel.state_for_save(module, self._run.optimizers), location,
                                storage_options=self.storage_options)
        else:
            ckpt = load_from(*resolve(location, self.storage_options), map_location="cpu")
            if lightning.is_lightning(ckpt):  # a file written by PyTorch Lightning: its layout, translated
                ckpt = lightning.to_ember(ckpt, path=location)
        ckpt = sharding.optimizer_states_for(ckpt, module, self._run.optimizers, self._sharded)
        run_state.check_resumable(ckpt, location, self._run)
        module.on_load_checkpoint(ckpt)
        run_state.restore(self._run, ckpt, location, self._parallel.load_state if self._sharded else None)
        trainer_eval.restore_datamodule(self.datamodule, ckpt)
        for cb in self.callbacks:
            cb.on_load_checkpoint(self, module, ckpt)


def _without_checkpoints(callbacks) -> list:
    return [cb for cb in ([callbacks] if isinstance(callbacks, Callback) else callbacks or [])
            if not isinstance(cb, ModelCheckpoint)]


@contextlib.contextmanager
def _anomaly(enabled: bool):
    if not enabled:
        yield
        return
    with torch.autograd.set_detect_anomaly(True):
        yield
