"""ember.Trainer: settings, fit(), and checkpoint saving/resuming."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch

from ember.callbacks.base import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import state as ckpt_state
from ember.checkpoint.io import find_last_checkpoint, load_checkpoint
from ember.checkpoint.writer import CheckpointWriter
from ember.data import ResumableLoader
from ember.errors import CheckpointError, MisconfigurationError
from ember.loggers import CSVLogger
from ember.loop import FitLoop
from ember.metrics import as_float
from ember.optim import SchedulerConfig, parse_optimizers
from ember.precision import Precision
from ember.preemption import StopRequests
from ember.progress import ProgressBar
from ember.seed import get_rng_state


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


def _check_limit(name: str, value: Any) -> None:
    ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
        isinstance(value, float) and 0.0 <= value <= 1.0)
    if not ok:
        raise MisconfigurationError(f"{name} must be an int >= 0 (batches) or a float in [0, 1]; received {value!r}.")


class Trainer:
    """Fits an ember.Module, checkpointing as it goes.

    Checkpointing is on by default: a ``ModelCheckpoint`` saves after every epoch to
    ``<default_root_dir>/checkpoints/`` keeping the latest. ``default_root_dir`` defaults to the
    working directory (the seed's name ``default_save_path`` works too).
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
    ) -> None:
        if default_save_path is not None and default_root_dir is not None:
            raise MisconfigurationError("give default_root_dir or its old name default_save_path, not both.")
        root = default_root_dir if default_root_dir is not None else default_save_path
        self.default_root_dir = str(root) if root is not None else os.getcwd()
        if max_steps is not None and max_steps == -1:
            max_steps = None
        if max_epochs is None and max_steps is None:
            max_epochs = 1000
        for name, value in (("max_epochs", max_epochs), ("max_steps", max_steps)):
            if value is not None and (not isinstance(value, int) or value < -1):
                raise MisconfigurationError(f"{name} must be an int >= 0 (or -1 for no limit); received {value!r}.")
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        if not isinstance(accumulate_grad_batches, int) or accumulate_grad_batches < 1:
            raise MisconfigurationError(
                f"accumulate_grad_batches must be an int >= 1; received {accumulate_grad_batches!r}.")
        self.accumulate_grad_batches = accumulate_grad_batches
        if gradient_clip_algorithm not in ("norm", "value"):
            raise MisconfigurationError(
                f"gradient_clip_algorithm must be 'norm' or 'value'; received {gradient_clip_algorithm!r}.")
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        _check_limit("limit_train_batches", limit_train_batches)
        _check_limit("limit_val_batches", limit_val_batches)
        self.limit_train_batches = limit_train_batches
        self.limit_val_batches = limit_val_batches
        if not isinstance(check_val_every_n_epoch, int) or check_val_every_n_epoch < 1:
            raise MisconfigurationError(
                f"check_val_every_n_epoch must be an int >= 1; received {check_val_every_n_epoch!r}.")
        self.check_val_every_n_epoch = check_val_every_n_epoch
        if isinstance(val_check_interval, bool) or not (
                (isinstance(val_check_interval, int) and val_check_interval >= 1)
                or (isinstance(val_check_interval, float) and 0.0 < val_check_interval <= 1.0)):
            raise MisconfigurationError(
                f"val_check_interval must be an int >= 1 (batches) or a float in (0, 1]; received {val_check_interval!r}.")
        self.val_check_interval = val_check_interval
        self.log_every_n_steps = max(1, int(log_every_n_steps))
        self.device = _device(accelerator)
        self._precision_setting = precision
        Precision(precision, self.device)  # validate now, not at fit time
        self.resume_from_checkpoint = resume_from_checkpoint
        self.callbacks = self._build_callbacks(enable_checkpointing, checkpoint_callback, callbacks)
        if logger is True:
            self.logger = CSVLogger(self.default_root_dir)
        elif logger is False or logger is None:
            self.logger = None
        else:
            self.logger = logger
        self._progress_bar = ProgressBar(enable_progress_bar)

        self.module = None
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_scheduler_configs: list[SchedulerConfig] = []
        self.precision_plugin: Precision | None = None
        self.fit_loop = FitLoop(self)
        self.should_stop = False
        self.optimizer_stepped = False
        self.ckpt_path: str | None = None
        self._metrics: dict[str, float | torch.Tensor] = {}  # tensors are read (synced) only when needed
        self._stop_requests = StopRequests()
        self._writer = CheckpointWriter()

    # ---------------------------------------------------------------- callbacks
    @staticmethod
    def _build_callbacks(enable_checkpointing, checkpoint_callback, callbacks) -> list[Callback]:
        if isinstance(callbacks, Callback):
            callbacks = [callbacks]
        out = list(callbacks or [])
        for cb in out:
            if not isinstance(cb, Callback):
                raise MisconfigurationError(
                    f"callbacks must be ember.callbacks.Callback instances; received {type(cb).__name__}.")
        if isinstance(checkpoint_callback, ModelCheckpoint):
            out.append(checkpoint_callback)
        elif checkpoint_callback not in (None, True, False):
            raise MisconfigurationError(
                f"checkpoint_callback must be a ModelCheckpoint, True or False; received {checkpoint_callback!r}.")
        enabled = enable_checkpointing and checkpoint_callback is not False
        has_ckpt = any(isinstance(cb, ModelCheckpoint) for cb in out)
        if not enabled and has_ckpt:
            raise MisconfigurationError(
                "checkpointing is turned off (enable_checkpointing=False or checkpoint_callback=False) but a "
                "ModelCheckpoint was given in callbacks; remove one of the two.")
        if enabled and not has_ckpt:
            out.append(ModelCheckpoint())
        return out

    @property
    def checkpoint_callbacks(self) -> list[ModelCheckpoint]:
        return [cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        cbs = self.checkpoint_callbacks
        return cbs[0] if cbs else None

    def _call(self, hook: str, *args: Any) -> None:
        """Run a hook on the module (if it defines it) and on every callback that overrides it."""
        targets = self._hook_cache.get(hook)
        if targets is None:
            targets = self._hook_cache[hook] = self._hook_targets(hook)
        for fn, is_callback in targets:
            if is_callback:
                fn(self, self.module, *args)
            else:
                fn(*args)

    def _hook_targets(self, hook: str) -> list:
        targets = []
        module_hook = getattr(self.module, hook, None)
        if callable(module_hook):
            targets.append((module_hook, False))
        base = getattr(Callback, hook)
        for cb in self.callbacks:
            if getattr(type(cb), hook, base) is not base or hook in vars(cb):
                targets.append((getattr(cb, hook), True))
        return targets

    # ---------------------------------------------------------------- facts
    @property
    def current_epoch(self) -> int:
        """The epoch being trained; after an epoch's end hooks, the next one (so max_epochs after fit)."""
        p = self.fit_loop.progress
        return p.epoch + 1 if p.epoch_done and not self.fit_loop.in_epoch_end else p.epoch

    @property
    def global_step(self) -> int:
        return self.fit_loop.progress.global_step

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        """The latest value of every logged metric (epoch means for epoch-level ones)."""
        return {k: torch.tensor(as_float(v)) for k, v in self._metrics.items()}

    def callback_metrics_float(self) -> dict[str, float]:
        return {k: as_float(v) for k, v in self._metrics.items()}

    @property
    def lr_schedulers(self) -> list:
        return [c.scheduler for c in self.lr_scheduler_configs]

    @property
    def logged_metrics(self) -> dict[str, float]:
        return self.callback_metrics_float()

    # ---------------------------------------------------------------- fit
    def fit(self, model, train_dataloaders=None, val_dataloaders=None, ckpt_path: str | os.PathLike | None = None):
        """Train ``model``; ``ckpt_path`` (a path, ``"last"`` or ``"best"``) resumes a run."""
        from ember.module import Module

        if not isinstance(model, Module):
            raise MisconfigurationError(f"fit() needs an ember.Module; received {type(model).__name__}.")
        if ckpt_path is not None and self.resume_from_checkpoint is not None:
            raise MisconfigurationError(
                "both Trainer(resume_from_checkpoint=...) and fit(ckpt_path=...) were given; use one "
                "(fit(ckpt_path=...) is the current name).")
        ckpt_path = ckpt_path if ckpt_path is not None else self.resume_from_checkpoint
        self.module = model
        model.trainer = self
        model.to(self.device)
        self.should_stop = False
        self.fit_loop = loop = FitLoop(self)
        self._hook_cache: dict[str, list] = {}
        model.__dict__["_logged"] = loop.log
        train = train_dataloaders if train_dataloaders is not None else _hook(model, "train_dataloader")
        if train is None:
            raise MisconfigurationError(
                "no training data: pass fit(model, train_dataloaders=...) or define train_dataloader().")
        loop.train_data = ResumableLoader(train)
        val = val_dataloaders if val_dataloaders is not None else _hook(model, "val_dataloader")
        loop.val_loader = val if (val is not None and hasattr(model, "validation_step")) else None
        self.optimizers, self.lr_scheduler_configs = parse_optimizers(model.configure_optimizers())
        self.precision_plugin = Precision(self._precision_setting, self.device)

        resolved = self._resolve_ckpt_path(ckpt_path)
        self.ckpt_path = resolved
        for cb in self.checkpoint_callbacks:
            cb.setup(self, resolved)
        if resolved is not None:
            self._restore(resolved)
        try:
            with self._stop_requests:
                self._call("on_fit_start")
                self._call("on_train_start")
                loop.run()
                self._call("on_train_end")
                self._call("on_fit_end")
            self._writer.wait()  # fit returns only once the last save is committed
        except BaseException as e:
            self._wait_quietly(e)
            for cb in self.callbacks:
                cb.on_exception(self, model, e)
            raise
        finally:
            model.__dict__["_logged"] = None
            self._flush_logger()

    def _wait_quietly(self, primary: BaseException) -> None:
        """Let an in-flight save finish while another error propagates; report its failure, if any."""
        try:
            self._writer.wait()
        except BaseException as e:  # noqa: BLE001
            if e is not primary:
                print(f"ember: a background checkpoint save also failed: {e}", file=sys.stderr, flush=True)

    def _resolve_ckpt_path(self, ckpt_path) -> str | None:
        if ckpt_path is None:
            return None
        if ckpt_path == "last":
            dirs = [cb.dirpath for cb in self.checkpoint_callbacks if cb.dirpath is not None]
            dirs.append(Path(self.default_root_dir) / "checkpoints")
            found = find_last_checkpoint(dirs)
            if found is None:
                print(f"ember: no checkpoint found in {', '.join(map(str, dict.fromkeys(dirs)))}; "
                      "ckpt_path='last' starts a fresh run.", flush=True)
                return None
            return str(found)
        if ckpt_path == "best":
            cb = self.checkpoint_callback
            if cb is None or cb.monitor is None or not cb.best_model_path:
                raise MisconfigurationError(
                    "ckpt_path='best' needs a ModelCheckpoint(monitor=...) that has saved a checkpoint in this "
                    "Trainer; pass the checkpoint's path instead.")
            return cb.best_model_path
        path = Path(ckpt_path)
        if not path.is_file():
            raise CheckpointError(
                f"cannot resume from {path}: no such file. Pass an existing checkpoint, 'last' or 'best'.")
        return str(path)

    # ---------------------------------------------------------------- checkpoints
    def dump_checkpoint(self, weights_only: bool = False) -> dict:
        """The checkpoint dict of the current training state."""
        from ember import __version__

        module = ckpt_state.unwrap_model(self.module)
        loop = self.fit_loop
        ckpt: dict[str, Any] = {
            "ember_version": __version__,
            "epoch": loop.progress.epoch,
            "global_step": self.global_step,
            "state_dict": module.state_dict(),
            **ckpt_state.hparams_entries(module),
        }
        if not weights_only:
            ckpt["optimizer_states"] = [o.state_dict() for o in self.optimizers]
            ckpt["lr_schedulers"] = [c.scheduler.state_dict() for c in self.lr_scheduler_configs]
            ckpt["callbacks"] = {cb.state_key: cb.state_dict() for cb in self.callbacks}
            scaler = self.precision_plugin.state_dict() if self.precision_plugin else None
            if scaler is not None:
                ckpt["amp_scaling_state"] = scaler
            ckpt["loops"] = {"fit": loop.state_dict()}
            ckpt["rng"] = get_rng_state()
            grads = ckpt_state.gradients(module)
            if grads:
                ckpt["accumulated_grads"] = grads
            for cb in self.callbacks:
                cb.on_save_checkpoint(self, module, ckpt)
        module.on_save_checkpoint(ckpt)
        return ckpt

    def save_checkpoint(self, filepath: str | os.PathLike, weights_only: bool = False, blocking: bool = True) -> None:
        """Write the current state to ``filepath``, atomically (the file is complete or absent).

        ``blocking=False`` returns once the state is snapshotted; a background thread writes and
        commits it. At most one save is in flight: the next one waits for it.
        ``wait_for_checkpoints()`` waits for it and raises its error if it failed.
        """
        self._save(filepath, weights_only=weights_only, blocking=blocking)

    def _save(self, filepath, *, weights_only: bool, blocking: bool, then=None) -> None:
        if self.module is None:
            raise MisconfigurationError("save_checkpoint() needs a model: call trainer.fit(model) first.")
        state = self.dump_checkpoint(weights_only)
        self._writer.save(state, filepath, blocking=blocking, deferred=self._step_only_storages(), then=then)

    def wait_for_checkpoints(self) -> None:
        """Wait until every save in flight is committed; raise the error of one that failed."""
        self._writer.wait()

    def _step_only_storages(self) -> set[int]:
        """Storages that change only inside optimizer.step(): parameters and optimizer state."""
        ptrs = {p.untyped_storage().data_ptr() for p in self.module.parameters()}
        for opt in self.optimizers:
            for st in opt.state.values():
                for v in st.values():
                    if isinstance(v, torch.Tensor):
                        ptrs.add(v.untyped_storage().data_ptr())
        ptrs.discard(0)
        return ptrs

    def _restore(self, path: str) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        ckpt_state.check_resumable(ckpt, path, len(self.optimizers), len(self.lr_scheduler_configs))
        module = ckpt_state.unwrap_model(self.module)
        from ember.module import load_weights

        module.on_load_checkpoint(ckpt)
        load_weights(module, ckpt["state_dict"], strict=True, source=path)
        for opt, state in zip(self.optimizers, ckpt["optimizer_states"]):
            opt.load_state_dict(state)
        for cfg, state in zip(self.lr_scheduler_configs, ckpt["lr_schedulers"]):
            cfg.scheduler.load_state_dict(state)
        self.precision_plugin.load_state_dict(ckpt.get("amp_scaling_state"))
        saved = ckpt.get("callbacks", {})
        for cb in self.callbacks:
            if cb.state_key in saved:
                cb.load_state_dict(saved[cb.state_key])
            cb.on_load_checkpoint(self, module, ckpt)
        self.fit_loop.load_state_dict(ckpt["loops"]["fit"], rng=ckpt.get("rng"),
                                      grads=ckpt.get("accumulated_grads"))

    # ---------------------------------------------------------------- used by the loop
    def _check_stop_request(self) -> bool:
        """At a step boundary: if a stop signal arrived, save where we are and ask the loop to stop."""
        if not self._stop_requests.requested:
            return False
        if not self.should_stop:
            self.should_stop = True
            for cb in self.checkpoint_callbacks:
                cb.save_for_resume(self)
            print(f"ember: stop signal {self._stop_requests.signum} received; saved step {self.global_step} "
                  "and stopped. Continue with fit(ckpt_path='last').", flush=True)
        return True

    def _step_scheduler(self, cfg: SchedulerConfig) -> None:
        if cfg.reduce_on_plateau:
            if cfg.monitor not in self._metrics:
                if cfg.strict:
                    raise MisconfigurationError(
                        f"ReduceLROnPlateau monitors {cfg.monitor!r}, which was not logged; logged metrics are "
                        f"{sorted(self._metrics)}. Log it, or set 'strict': False in the lr_scheduler dict.")
                warnings.warn(f"ReduceLROnPlateau skipped: {cfg.monitor!r} was not logged", stacklevel=2)
                return
            cfg.scheduler.step(as_float(self._metrics[cfg.monitor]))
        else:
            with warnings.catch_warnings():
                # After a resume the first scheduler step can precede this process's first optimizer step.
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                cfg.scheduler.step()

    def _toggle(self, optimizer) -> list:
        """Freeze parameters that belong to other optimizers while this one's loss is backpropagated."""
        mine = {id(p) for g in optimizer.param_groups for p in g["params"]}
        frozen = []
        for opt in self.optimizers:
            for g in opt.param_groups:
                for p in g["params"]:
                    if id(p) not in mine and p.requires_grad:
                        p.requires_grad_(False)
                        frozen.append(p)
        return frozen

    def _log_to_logger(self, metrics: dict[str, float]) -> None:
        if self.logger is not None and metrics:
            self.logger.log_metrics({k: as_float(v) for k, v in metrics.items()}, step=self.global_step,
                                    epoch=self.current_epoch)

    def _flush_logger(self) -> None:
        if self.logger is not None:
            self.logger.flush()


def _hook(module, name: str):
    fn = getattr(module, name, None)
    return fn() if callable(fn) else None
