"""ember.Trainer: settings, fit(), and the run's checkpoints (what is saved, where it is found)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Any, Iterable

import torch

from ember import compat
from ember.callbacks.base import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import state as run_state
from ember.checkpoint.io import load_from
from ember.checkpoint.manager import CheckpointManager, find_last
from ember.checkpoint.store import open_store, resolve
from ember.checkpoint.writer import CheckpointWriter
from ember.data import ResumableLoader
from ember.errors import CheckpointError, MisconfigurationError
from ember.loggers import CSVLogger
from ember.loop import FitLoop, FitParts, Progress
from ember.metrics import as_float
from ember.optim import parse_optimizers
from ember.precision import Precision
from ember.preemption import StopRequests
from ember.progress import ProgressBar
from ember.settings import FitSettings


def _device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if accelerator != "auto":
            raise MisconfigurationError(f"accelerator={accelerator!r} was asked for but CUDA is not available.")
        return torch.device("cpu")
    if accelerator == "cpu":
        return torch.device("cpu")
    raise MisconfigurationError(f"accelerator must be 'auto', 'cpu', 'cuda' or 'gpu'; received {accelerator!r}.")


class Trainer:
    """Fits an ember.Module, checkpointing as it goes.

    Checkpointing is on by default: a ``ModelCheckpoint`` saves after every epoch to
    ``<default_root_dir>/checkpoints/`` keeping the latest. ``default_root_dir`` defaults to the
    working directory (the seed's name ``default_save_path`` works too). Fit settings are checked in
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
        logger: CSVLogger | bool = True,
        log_every_n_steps: int = 50,
        accelerator: str = "auto",
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
        self.device = _device(accelerator)
        self.storage_options = storage_options
        self.resume_from_checkpoint = resume_from_checkpoint
        self.callbacks = _build_callbacks(enable_checkpointing, checkpoint_callback, callbacks)
        self.logger = CSVLogger(self.default_root_dir, storage_options=storage_options) if logger is True else (
            logger or None)
        self._bar = ProgressBar(enable_progress_bar)
        self.checkpoint_writer = CheckpointWriter()
        self.module = None
        self.fit_loop: FitLoop | None = None
        self.ckpt_path: str | None = None
        self._run: run_state.RunState | None = None
        self._hook_cache: dict[str, list] = {}
        self._stop_requests = StopRequests()

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
        return int(os.environ.get("RANK", "0")) == 0

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
        loop = self.fit_loop = FitLoop(
            self.settings, self._parts(model, train_dataloaders, val_dataloaders), call=self._call,
            barrier=self.checkpoint_writer.snapshot_barrier, stop_requested=self._stop_requested,
            logger=self.logger, bar=self._bar)
        self._hook_cache = {}
        self._run = run_state.RunState(
            model=model, loop=loop, optimizers=loop.parts.optimizers,
            lr_schedulers=[c.scheduler for c in loop.parts.schedulers], precision=loop.parts.precision,
            callbacks=_keyed(self.callbacks))
        model.__dict__["_logged"] = loop.log
        default_dir = os.path.join(self.default_root_dir, "checkpoints")
        for manager in self.checkpoint_managers:
            manager.bind(default_dir, self.checkpoint_writer, lambda: self.is_global_zero)
        self.ckpt_path = self._resolve_ckpt_path(ckpt_path)
        if self.ckpt_path is not None:
            self._restore(self.ckpt_path)
        try:
            with self._stop_requests:
                for hook in ("on_fit_start", "on_train_start"):
                    self._call(hook)
                loop.run()
                for hook in ("on_train_end", "on_fit_end"):
                    self._call(hook)
            self.checkpoint_writer.wait()  # fit returns only once the last save is committed
        except BaseException as e:
            self._wait_quietly(e)
            for cb in self.callbacks:
                cb.on_exception(self, model, e)
            raise
        finally:
            model.__dict__["_logged"] = None
            if self.logger is not None:
                self.logger.flush()

    def _parts(self, model, train, val) -> FitParts:
        train = train if train is not None else _hook(model, "train_dataloader")
        if train is None:
            raise MisconfigurationError(
                "no training data: pass fit(model, train_dataloaders=...) or define train_dataloader().")
        val = val if val is not None else _hook(model, "val_dataloader")
        optimizers, schedulers = parse_optimizers(model.configure_optimizers())
        return FitParts(module=model, optimizers=optimizers, schedulers=schedulers,
                        precision=Precision(self.settings.precision, self.device), train_data=ResumableLoader(train),
                        val_loader=val if (val is not None and hasattr(model, "validation_step")) else None,
                        device=self.device)

    def _call(self, hook: str, *args: Any) -> None:
        """Run a hook on the module (if it defines it) and on every callback that overrides it.
        Before each, a background save in flight finishes copying the state (user code may change it)."""
        targets = self._hook_cache.get(hook)
        if targets is None:
            targets = self._hook_cache[hook] = _hook_targets(self.module, self.callbacks, hook)
        barrier = self.checkpoint_writer.snapshot_barrier
        for fn, is_callback in targets:
            barrier()
            if is_callback:
                fn(self, self.module, *args)
            else:
                fn(*args)

    def _wait_quietly(self, primary: BaseException) -> None:
        """Let an in-flight save finish while another error propagates; report its failure, if any."""
        try:
            self.checkpoint_writer.wait()
        except BaseException as e:  # noqa: BLE001
            if e is not primary:
                reason = str(e) or repr(e)
                print(f"ember: a background checkpoint save also failed: {reason}", file=sys.stderr, flush=True)

    def _stop_requested(self) -> bool:
        """At a step boundary: if a stop signal arrived, save where we are and ask the loop to stop."""
        if not self._stop_requests.requested:
            return False
        if not self.fit_loop.should_stop:
            self.fit_loop.should_stop = True
            for manager in self.checkpoint_managers:
                manager.save_for_resume(self.dump_checkpoint)
            print(f"ember: stop signal {self._stop_requests.signum} received; saved step {self.global_step} "
                  "and stopped. Continue with fit(ckpt_path='last').", flush=True)
        return True

    # ---------------------------------------------------------------- checkpoints
    def _resolve_ckpt_path(self, ckpt_path) -> str | None:
        if ckpt_path is None:
            return None
        if ckpt_path == "last":
            return self._find_last()
        if ckpt_path == "best":
            best = [m.location(m.best.name) for m in self.checkpoint_managers if m.monitor is not None and m.best]
            if not best:
                raise MisconfigurationError(
                    "ckpt_path='best' needs a ModelCheckpoint(monitor=...) that has saved a checkpoint in this "
                    "Trainer; pass the checkpoint's path instead.")
            return best[0]
        location = os.fspath(ckpt_path)
        store, name = resolve(location, self.storage_options)
        if not store.exists(name):
            local = store.local_path(name)
            if local is not None and local.is_dir():
                raise CheckpointError(f"cannot resume from {location}: it is a folder, not a checkpoint file. Pass "
                                      "a checkpoint inside it, or ckpt_path='last' to pick the newest one.")
            raise CheckpointError(
                f"cannot resume from {location}: no such file. Pass an existing checkpoint, 'last' or 'best'.")
        return location

    def _find_last(self) -> str | None:
        stores = {m.store.describe(): m.store for m in self.checkpoint_managers}
        default = open_store(os.path.join(self.default_root_dir, "checkpoints"), self.storage_options)
        stores.setdefault(default.describe(), default)
        found = find_last(list(stores.values()))
        if found is None:
            print(f"ember: no checkpoint found in {', '.join(stores)}; ckpt_path='last' starts a fresh run.", flush=True)
            return None
        store, name = found
        return store.describe(name)

    def dump_checkpoint(self, weights_only: bool = False) -> dict:
        """The checkpoint dict of the current training state (after every on_save_checkpoint hook)."""
        if self.module is None:
            raise MisconfigurationError("save_checkpoint() needs a model: call trainer.fit(model) first.")
        run = self._run or run_state.RunState(model=self.module, loop=Progress())  # a model set without fit
        run = replace(run, callbacks=_keyed(self.callbacks))  # callbacks may be added between fits
        ckpt = run_state.collect(run, weights_only)
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
        if self.is_global_zero:
            self.checkpoint_writer.save(state, resolve(filepath, self.storage_options), blocking=blocking)

    def wait_for_checkpoints(self) -> None:
        """Wait until every save in flight is committed; raise the error of one that failed."""
        self.checkpoint_writer.wait()

    def _restore(self, location: str) -> None:
        ckpt = load_from(*resolve(location, self.storage_options), map_location="cpu")
        run_state.check_resumable(ckpt, location, self._run)
        module = run_state.unwrap_model(self.module)
        module.on_load_checkpoint(ckpt)
        run_state.restore(self._run, ckpt, location)
        for cb in self.callbacks:
            cb.on_load_checkpoint(self, module, ckpt)


def _build_callbacks(enable_checkpointing, checkpoint_callback, callbacks) -> list[Callback]:
    callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise MisconfigurationError(
                f"callbacks must be ember.callbacks.Callback instances; received {type(cb).__name__}.")
    out, enabled = compat.checkpoint_callbacks(enable_checkpointing, checkpoint_callback, callbacks, ModelCheckpoint)
    has_ckpt = any(isinstance(cb, ModelCheckpoint) for cb in out)
    if not enabled and has_ckpt:
        raise MisconfigurationError(
            "checkpointing is turned off (enable_checkpointing=False or checkpoint_callback=False) but a "
            "ModelCheckpoint was given in callbacks; remove one of the two.")
    if enabled and not has_ckpt:
        out.append(ModelCheckpoint())
    _keyed(out)
    return out


def _keyed(callbacks: list[Callback]) -> dict[str, Callback]:
    """Callbacks by ``state_key``; two with one key would overwrite each other's state."""
    out: dict[str, Callback] = {}
    for cb in callbacks:
        key = cb.state_key
        if key in out:
            raise MisconfigurationError(
                f"two callbacks have the state key {key!r} ({type(out[key]).__name__} and {type(cb).__name__}), so "
                "their checkpointed state would collide; give one another key, e.g. ModelCheckpoint(..., "
                "state_key='best-loss'), or override state_key.")
        out[key] = cb
    return out


def _hook_targets(module, callbacks: list[Callback], hook: str) -> list:
    targets = []
    module_hook = getattr(module, hook, None)
    if callable(module_hook):
        targets.append((module_hook, False))
    base = getattr(Callback, hook)
    for cb in callbacks:
        if getattr(type(cb), hook, base) is not base or hook in vars(cb):
            targets.append((getattr(cb, hook), True))
    return targets


def _hook(module, name: str):
    fn = getattr(module, name, None)
    return fn() if callable(fn) else None
