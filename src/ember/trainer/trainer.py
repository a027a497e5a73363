"""ember.Trainer: settings, fit/validate/test/predict, and the run's checkpoints (what is saved, where it is found)."""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import timedelta
from typing import Any, Iterable

from ember import compat
from ember import loggers as _loggers
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.progress.tqdm_progress import replaces_default_bar
from ember.callbacks.timer import max_time_callback
from ember.checkpoint import resume
from ember.checkpoint import state as run_state
from ember.checkpoint.writer import CheckpointWriter
from ember.core.callback import Callback
from ember.core.datamodule import loaders_for, split_datamodule
from ember.core.module import Module
from ember.distributed.select import strategy_for
from ember.distributed.sharded_saves import ShardedWriter
from ember.errors import MisconfigurationError
from ember.loops.bar import FitBar
from ember.loops.data import length, limit_batches
from ember.loops.fit import FitLoop, FitParts
from ember.loops.hooks import Hooks, keyed
from ember.loops.preemption import StopRequests
from ember.loops.results import LogSink, MetricsHub
from ember.loops.settings import FitSettings, device_for
from ember.loops.valcheck import check_combination
from ember.profilers.instrument import hooks_for, instrument_loop, resolve_profiler
from ember.strategies.single_device import SingleDeviceStrategy
from ember.trainer import arguments, evaluate, messages
from ember.trainer.checkpointing import TrainerCheckpoints
from ember.trainer.evaluate import TrainerEvaluation
from ember.trainer.properties import TrainerFacts
from ember.tuner.session import TunerExit
from ember.utilities.compile import unwrap_compiled


class Trainer(TrainerEvaluation, TrainerCheckpoints, TrainerFacts):
    """Fits an ember.Module, checkpointing as it goes; validates, tests and predicts (Lightning's API).

    Checkpointing is on by default: a ``ModelCheckpoint`` saves after every epoch to
    ``<default_root_dir>/lightning_logs/version_N/checkpoints/`` (the default logger's folder, as Lightning)
    keeping the latest. ``default_root_dir`` defaults to the
    working directory (the seed's name ``default_save_path`` works too). Fit settings are checked in
    ``ember.loops.settings.FitSettings``; old argument names are translated in ``ember.compat``; Lightning
    arguments ember does not implement are refused by name (``ember.trainer.arguments``).
    ``reduce(tensor, op)``, when set (distributed runs), combines ``self.log(..., sync_dist=True)`` values.
    ``help(ember.Trainer)`` lists every argument (``__init__``'s docstring).
    """

    @arguments.defaults_from_env
    @arguments.documented
    def __init__(
        self,
        accelerator: str = "auto", strategy: Any = "auto", devices: Any = "auto", num_nodes: int = 1,
        precision: str | int = "32", logger: _loggers.Logger | Iterable[_loggers.Logger] | bool | None = True,
        callbacks: Callback | Iterable[Callback] | None = None, fast_dev_run: bool | int = False,
        max_epochs: int | None = None, min_epochs: int | None = None, max_steps: int | None = None,
        min_steps: int | None = None, limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None, limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        val_check_interval: int | float | str | timedelta | dict | None = None,
        check_val_every_n_epoch: int | None = 1, num_sanity_val_steps: int = 2,
        log_every_n_steps: int = 50, enable_checkpointing: bool = True, enable_progress_bar: bool = True,
        enable_model_summary: bool = True, accumulate_grad_batches: int = 1, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None, deterministic: bool | str | None = None,
        benchmark: bool | None = None, inference_mode: bool = True, profiler: Any = None,
        detect_anomaly: bool = False, reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: str | os.PathLike | None = None, checkpoint_callback: ModelCheckpoint | bool | None = None,
        resume_from_checkpoint: str | os.PathLike | None = None, default_save_path: str | os.PathLike | None = None,
        storage_options: dict | None = None, max_time: Any = None, overfit_batches: int | float = 0.0,
        use_distributed_sampler: bool = True, **kwargs: Any,
    ) -> None:
        arguments.check_unknown(kwargs)
        accelerator, strategy, devices = arguments.hardware(accelerator, strategy, devices)
        enable_checkpointing, enable_progress_bar, enable_model_summary = arguments.on_unless_false(
            enable_checkpointing, enable_progress_bar, enable_model_summary)
        arguments.refuse_options(precision=str(precision))
        arguments.apply_backend_flags(deterministic, benchmark)
        check_combination(val_check_interval, check_val_every_n_epoch)
        self.fast_dev_run = n = arguments.fast_dev_run_batches(fast_dev_run)
        messages.announce_limits(n, overfit_batches, dict(
            limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches), val_check_interval)
        if n:  # Lightning: n batches of each stage, one epoch, no checkpoints or loggers
            (max_epochs, max_steps, num_sanity_val_steps, val_check_interval, check_val_every_n_epoch, logger,
             enable_checkpointing, checkpoint_callback) = (1, n, 0, 1.0, 1, None, False, False)
            limit_train_batches = limit_val_batches = limit_test_batches = limit_predict_batches = n
            callbacks = arguments.without_checkpoints(callbacks)
        self.overfit_batches, limit_train_batches, limit_val_batches = arguments.overfit(
            overfit_batches, limit_train_batches, limit_val_batches)
        self.settings = FitSettings(
            max_epochs=arguments.epoch_limit(max_epochs, max_steps, max_time),
            max_steps=max_steps, accumulate_grad_batches=accumulate_grad_batches, gradient_clip_val=gradient_clip_val,
            gradient_clip_algorithm=gradient_clip_algorithm or "norm", min_epochs=min_epochs, min_steps=min_steps,
            limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches,
            check_val_every_n_epoch=check_val_every_n_epoch, val_check_interval=val_check_interval,
            log_every_n_steps=log_every_n_steps, precision=precision, num_sanity_val_steps=num_sanity_val_steps,
            inference_mode=inference_mode, reload_dataloaders_every_n_epochs=reload_dataloaders_every_n_epochs)
        self.accelerator, self.devices, self.num_nodes = accelerator, devices, num_nodes
        self.profiler = resolve_profiler(profiler)  # None: a PassThroughProfiler, and nothing is instrumented
        self._parallel = strategy_for(strategy, accelerator, devices, num_nodes)  # may start the other processes
        self.device = self._parallel.setup() if self._parallel is not None else device_for(accelerator)
        self._single = SingleDeviceStrategy(self.device)  # trainer.strategy of a one-process run
        self.use_distributed_sampler, self.detect_anomaly = bool(use_distributed_sampler), bool(detect_anomaly)
        self.enable_model_summary, self.storage_options = bool(enable_model_summary), storage_options
        self.resume_from_checkpoint = resume_from_checkpoint
        self.default_root_dir = compat.root_dir(default_root_dir, default_save_path)
        self.callbacks = arguments.build_callbacks(enable_checkpointing, checkpoint_callback, callbacks)
        self.callbacks += [t for t in [max_time_callback(max_time, self.callbacks)] if t is not None]  # Timer
        self._set_outputs(logger, enable_progress_bar)
        self.checkpoint_writer = ShardedWriter(storage_options, self._parallel.timeout) if self._sharded else \
            CheckpointWriter()
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
        enabled = enable_progress_bar and self.is_global_zero and not replaces_default_bar(self.callbacks)
        self._bar = FitBar(enabled)

    @property
    def logger(self):
        """The first logger (None without loggers); setting it replaces every logger."""
        return self.loggers[0] if self.loggers else None

    @logger.setter
    def logger(self, value) -> None:
        self.loggers = [] if value is None else [value]

    def _default_ckpt_dir(self) -> str:
        """Where checkpoints go without a ``dirpath`` (``ember.loggers.checkpoint_dir``: Lightning's folder)."""
        return _loggers.checkpoint_dir(self.loggers, self.default_root_dir)

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
            ckpt_path: str | os.PathLike | None = None, weights_only: bool | None = None):
        """Train ``model``; ``ckpt_path`` (a path or URL, ``"last"`` or ``"best"``) resumes a run.
        Loaders come from the arguments, else ``datamodule``, else the module's ``*_dataloader()``.
        ``weights_only`` (Lightning's torch.load flag) changes nothing: ember files hold no pickle.

        Args:
            model: the LightningModule to train.
            train_dataloaders: the training DataLoader(s), or a LightningDataModule.
            val_dataloaders: the validation DataLoader(s).
            datamodule: the LightningDataModule giving the loaders.
            ckpt_path: the checkpoint to resume from (None: a fresh run, unless ``resume_from_checkpoint``).
            weights_only: accepted for Lightning's signature; changes nothing.
        """
        train_dataloaders, datamodule = split_datamodule(train_dataloaders, datamodule)
        model = unwrap_compiled(model)  # torch.compile(model): its module, with compiled step methods
        ckpt_path = compat.resume_path(ckpt_path, self.resume_from_checkpoint)
        hooks = self._attach(model, datamodule)
        self.profiler.setup("fit", self.local_rank if self.world_size > 1 else None, self.log_dir)
        strategy, self._failing, self.fitting = self._parallel, False, True
        self._last_fn, self._interrupted = "fit", False  # trainer.state
        tuned = False
        try:
            with strategy.failure_guard() if strategy is not None else contextlib.nullcontext():
                try:
                    with self._stop_requests, arguments.anomaly(self.detect_anomaly):
                        self._fit(model, hooks, train_dataloaders, val_dataloaders, ckpt_path)
                except TunerExit:  # a tuner searched at on_fit_start and ends fit on purpose (state restored),
                    tuned = True  # on every rank: not a failure for the peers to learn of
                self.checkpoint_writer.wait()  # fit returns only once the last save is committed
                if strategy is not None:
                    strategy.barrier()  # ... on every rank: the files are there for all of them
            if tuned:
                evaluate.teardown(self, hooks, "fit")
        except BaseException as e:
            self._failing = True  # no collectives from here: a peer may be gone
            self._interrupted = True
            self._wait_quietly(e)
            hooks("on_exception", e)
            raise
        finally:
            model.__dict__["_logged"] = None
            self.fitting = False
            self.profiler.describe()  # the profile report (nothing without a profiler)
            if self.fit_loop is not None:
                self.fit_loop.parts.end_workers()
            if self.is_global_zero:
                group = _loggers.LoggerGroup(self.loggers)
                group.flush()
                group.finalize("success" if sys.exc_info()[0] is None else "failed")

    def _fit(self, model, hooks: Hooks, train, val, ckpt_path) -> None:
        dm, given = self.datamodule, (train, val)  # a reload re-asks the datamodule/module; passed loaders stay
        evaluate.setup(self, hooks, "fit")
        train = self._train_loader = arguments.for_overfit(loaders_for("fit", train, dm, model), self, "train")
        val = loaders_for("validate", val, dm, model) if callable(getattr(model, "validation_step", None)) else val
        val = arguments.for_overfit(val, self, "val")
        reload = lambda: (loaders_for("fit", given[0], dm, model), loaders_for("validate", given[1], dm, model))  # noqa: E731
        strategy = self._parallel
        wrapped = strategy.setup_module(model, self.device) if strategy is not None else model  # before the optimizers
        parts = FitParts.build(model, train, val, self.settings.precision, self.device, reload=reload,
                               strategy=strategy, wrapped=wrapped, distributed_sampler=self.use_distributed_sampler)
        loop = self.fit_loop = FitLoop(
            self.settings, parts, hooks=hooks, barrier=self.checkpoint_writer.snapshot_barrier,
            stop_requested=self._stop_requested, hub=self._hub, sink=self._sink, bar=self._bar, reduce=self.reduce)
        instrument_loop(loop, self.profiler, self)
        self._run = run_state.RunState(
            model=wrapped, loop=loop, optimizers=loop.parts.optimizers,
            lr_schedulers=[c.scheduler for c in loop.parts.schedulers], precision=loop.parts.precision,
            callbacks=keyed(self.callbacks))
        _loggers.LoggerGroup(self.loggers).start_fit(model)  # every rank: they agree on the version folders
        from_rank0 = strategy.broadcast_object if strategy is not None else None
        for manager in self.checkpoint_managers:
            manager.bind(self._default_ckpt_dir(), self.checkpoint_writer, lambda: self.is_global_zero, from_rank0)
        self.ckpt_path = self._on_rank0(lambda: resume.locate(ckpt_path, self._checkpoint_place(), entry="fit"))
        if self.ckpt_path is not None:
            self._restore(self.ckpt_path)
        messages.fit_hints(self, limit_batches(self.settings.limit_train_batches, length(train)))
        hooks("on_fit_start")
        if self.enable_model_summary and self.is_global_zero and not any(
                "ModelSummary" in type(cb).__name__ for cb in self.callbacks):
            messages.log_summary(model)
        self.sanity_checking = True
        try:
            loop.sanity_check()
        finally:
            self.sanity_checking = False
        if loop.prepare():
            hooks("on_train_start")
            loop.run()
            messages.log_stop(self)
            hooks("on_train_end")
        else:  # no training batch: Lightning skips training, its hooks too
            messages.no_training(self, train)
        hooks("on_fit_end")
        evaluate.teardown(self, hooks, "fit")

    def _attach(self, model, datamodule) -> Hooks:
        """Connect the model (and datamodule) to this Trainer for one fit/validate/test/predict."""
        if not isinstance(model, Module):
            raise MisconfigurationError(f"expected an ember.LightningModule; received {type(model).__name__}.")
        self.module, self.datamodule = model, datamodule
        model.trainer = self
        if datamodule is not None:
            datamodule.trainer = self
        model.to(self.device)
        self._hub.reset()
        self._hub.logger = _loggers.LoggerGroup(self.loggers) if self.loggers and self.is_global_zero else None
        self.callbacks = arguments.with_module_callbacks(self.callbacks, model)
        hooks = self._hooks = hooks_for(self.profiler)(model, self.callbacks, self.checkpoint_writer.snapshot_barrier,
                                                       self)
        hooks.datamodule = datamodule
        self._sink = LogSink(hooks)
        model.__dict__["_logged"] = self._sink
        return hooks
