"""The fit loop: epochs, batches, optimizer steps, validation. It states facts; callbacks and managers decide.

The loop gets what it needs explicitly (settings, the parts it trains, a hook caller, a logger, the
barrier before user code) and owns what it changes: its progress, the metrics, ``should_stop``."""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from ember import compat
from ember.checkpoint.state import gradients, restore_gradients
from ember.data import ResumableLoader
from ember.errors import MisconfigurationError
from ember.metrics import MetricStore, as_float
from ember.optim import SchedulerConfig, frozen_except, parse_optimizers, step_scheduler
from ember.precision import Precision
from ember.seed import get_rng_state, preserved_rng, set_rng_state
from ember.settings import FitSettings


@dataclass
class Progress:
    """Where the loop is (part of the loop's Stateful state)."""

    epoch: int = 0            # the epoch being trained (or just finished, when epoch_done)
    batch: int = 0            # batches consumed in this epoch
    global_step: int = 0      # optimizer steps taken
    epoch_done: bool = False  # the epoch finished (validation, schedulers and epoch-end hooks ran)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("epoch", "batch", "global_step", "epoch_done"):
            setattr(self, k, state[k])


@dataclass
class FitParts:
    """What one fit trains: built by the Trainer from the module and its configure_optimizers()."""

    module: torch.nn.Module
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[SchedulerConfig]
    precision: Precision
    train_data: ResumableLoader
    val_loader: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    training_step: Callable[..., Any] | None = None  # the module's, through a DDP wrapper when there is one

    @classmethod
    def build(cls, model, train, val, precision: str, device: torch.device, strategy: Any = None,
              wrapped: Any = None) -> "FitParts":
        """The parts from fit()'s arguments, or the module's own *_dataloader() methods. With a
        ``strategy`` (a job of many processes) the training data is sharded across ranks and
        ``training_step`` runs through ``wrapped`` (so that gradients are all-reduced)."""
        train = train if train is not None else _call_if_defined(model, "train_dataloader")
        if train is None:
            raise MisconfigurationError(
                "no training data: pass fit(model, train_dataloaders=...) or define train_dataloader().")
        step = None
        if strategy is not None:
            train = strategy.distributed_loader(train)
            step = functools.partial(strategy.training_step, wrapped)
        val = val if val is not None else _call_if_defined(model, "val_dataloader")
        optimizers, schedulers = parse_optimizers(model.configure_optimizers())
        return cls(module=model, optimizers=optimizers, schedulers=schedulers, precision=Precision(precision, device),
                   train_data=ResumableLoader(train),
                   val_loader=val if (val is not None and hasattr(model, "validation_step")) else None, device=device,
                   training_step=step)


def _call_if_defined(module, name: str):
    fn = getattr(module, name, None)
    return fn() if callable(fn) else None


def move_to_device(batch: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return batch  # data loaders yield CPU tensors; nothing to move
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return type(batch)((k, move_to_device(v, device)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def _limit(limit: int | float, total: int | None) -> int | float:
    """Batches to use per epoch: an int, or a fraction of the loader's length (settings checked the type)."""
    if isinstance(limit, int):
        return limit if total is None else min(limit, total)
    if total is None:
        return math.inf if limit == 1.0 else 0
    return int(total * limit)


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an IterableDataset without __len__
        return None


def loss_of(output: Any) -> torch.Tensor | None:
    if output is None or isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "loss" in output:
        return output["loss"]
    raise MisconfigurationError(
        f"training_step must return a loss tensor, a dict with a 'loss' entry, or None (skip the batch); "
        f"received {type(output).__name__}{' with keys ' + str(sorted(output)) if isinstance(output, dict) else ''}."
    )


class FitLoop:
    """Runs epochs until max_epochs/max_steps or a stop request. Stateful: its state is the run's position.

    ``call(hook, *args)`` runs a hook on the module and callbacks; ``barrier()`` is called before any
    user code runs (a background save may still be copying the state); ``stop_requested()`` is asked
    at step boundaries; ``logger`` (or None) receives metrics.
    """

    def __init__(self, settings: FitSettings, parts: FitParts, *, call: Callable[..., None],
                 barrier: Callable[[], None], stop_requested: Callable[[], bool], logger: Any = None,
                 bar: Any = None) -> None:
        self.settings, self.parts = settings, parts
        self.call, self.barrier, self.stop_requested = call, barrier, stop_requested
        self.logger, self.bar = logger, bar
        self.progress = Progress()
        self.metrics: dict[str, float | torch.Tensor] = {}  # tensors are read (synced) only when needed
        self.should_stop = False
        self.optimizer_stepped = False
        self.in_epoch_end = False  # epoch-end hooks are running: current_epoch still names the old epoch
        self.last_loss: torch.Tensor | None = None
        self.train_metrics = MetricStore()
        self.val_metrics = MetricStore()
        self.stage = "train"
        self._batch = None
        self._resume: dict[str, Any] | None = None  # the checkpoint's loop state, consumed by the first epoch
        self.per_optimizer = "optimizer_idx" in inspect.signature(parts.module.training_step).parameters

    # ---------------------------------------------------------------- Stateful
    def state_dict(self) -> dict[str, Any]:
        """Epoch, step, data position, every RNG state and mid-window gradients: exact resume."""
        state = self.progress.state_dict()
        state["data"] = self.parts.train_data.state_dict()
        state["rng"] = get_rng_state()
        state["accumulated_grads"] = gradients(self.parts.module)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.progress.load_state_dict(state)
        self._resume = state

    # ---------------------------------------------------------------- logging sink
    def log(self, name: str, value: Any, prog_bar: bool = False, on_step: bool | None = None,
            on_epoch: bool | None = None, logger: bool = True, batch_size: int | None = None) -> None:
        training = self.stage == "train"
        store = self.train_metrics if training else self.val_metrics
        store.record(name, value, training, self._batch, prog_bar, on_step, on_epoch, logger, batch_size)

    def _to_logger(self, metrics: dict) -> None:
        if self.logger is not None and metrics:
            self.logger.log_metrics({k: as_float(v) for k, v in metrics.items()}, step=self.progress.global_step,
                                    epoch=self.progress.epoch)

    # ---------------------------------------------------------------- the loop
    def run(self) -> None:
        p = self.progress
        resume = self._resume
        if resume is not None and p.epoch_done:  # resumed at an epoch end: no part-epoch to rebuild
            if resume.get("rng") is not None:
                set_rng_state(resume["rng"])
            self.parts.train_data.restore_epoch_end(resume.get("data"))
            self._resume = None
        while not self.should_stop:
            if p.epoch_done:
                if self.settings.limits_reached(p.epoch + 1, p.global_step):
                    break
                p.epoch, p.batch, p.epoch_done = p.epoch + 1, 0, False
            elif self.settings.limits_reached(p.epoch, p.global_step):
                break
            self.run_epoch()
            if not p.epoch_done:  # stopped part-way (max_steps or a stop request)
                break
            self.stop_requested()

    def _start_epoch(self):
        """The epoch's batch iterator, resumed part-way when the loop was restored mid-epoch."""
        p, parts = self.progress, self.parts
        resume, self._resume = self._resume, None
        it, skipped = parts.train_data.epoch_iterator(p.epoch, p.batch if resume else 0,
                                                      resume.get("data") if resume else None)
        if resume is not None:
            if resume.get("rng") is not None:
                set_rng_state(resume["rng"])
            if skipped != p.batch:
                p.batch = skipped
            elif resume.get("accumulated_grads"):
                restore_gradients(parts.module, resume["accumulated_grads"])
        return it

    def run_epoch(self) -> None:
        p, parts = self.progress, self.parts
        parts.module.train()
        self.call("on_train_epoch_start")
        n_batches = _limit(self.settings.limit_train_batches, _length(parts.train_data.loader))
        it = self._start_epoch()
        val_every = self._val_interval(n_batches)
        bar = self.bar.start_epoch(p.epoch, None if math.isinf(n_batches) else n_batches, p.batch)
        batch_idx = p.batch
        stepped_at_end = True
        while batch_idx < n_batches:
            try:
                batch = next(it)
            except StopIteration:
                break
            batch = move_to_device(batch, parts.device)
            self._batch = batch
            self.call("on_train_batch_start", batch, batch_idx)
            is_last = batch_idx + 1 >= n_batches
            outputs = self.train_step(batch, batch_idx, is_last)
            stepped_at_end = self.optimizer_stepped
            p.batch = batch_idx + 1
            if self.optimizer_stepped:
                self.after_optimizer_step()
            if val_every and p.batch % val_every == 0 and not is_last:
                self.validate()
            self.call("on_train_batch_end", outputs, batch, batch_idx)
            bar.update(p.global_step, self.last_loss, self.metrics, self.train_metrics.prog_bar)
            batch_idx += 1
            if self.optimizer_stepped and (self.stop_requested() or self.should_stop
                                           or self.settings.limits_reached(p.epoch, p.global_step)):
                bar.close()
                return
        self._batch = None
        if not stepped_at_end:  # a loader without a length ended inside an accumulation window
            self.optimizer_step()
            self.after_optimizer_step()
        bar.close()
        self.end_epoch()

    def end_epoch(self) -> None:
        p, s = self.progress, self.settings
        means = self.train_metrics.epoch_means()
        self.metrics.update(means)
        if self.parts.val_loader is not None and (p.epoch + 1) % s.check_val_every_n_epoch == 0:
            self.validate()
        self._to_logger(means)
        for cfg in self.parts.schedulers:
            if cfg.interval == "epoch" and (p.epoch + 1) % cfg.frequency == 0:
                step_scheduler(cfg, self.metrics)
        p.epoch_done = True
        self.in_epoch_end = True
        try:
            self.call("on_train_epoch_end")
        finally:
            self.in_epoch_end = False
        if self.logger is not None:
            self.logger.flush()

    def _val_interval(self, n_batches) -> int:
        if self.parts.val_loader is None:
            return 0
        v = self.settings.val_check_interval
        if isinstance(v, float):
            if v >= 1.0 or math.isinf(n_batches):
                return 0
            return max(1, int(n_batches * v))
        return v

    # ---------------------------------------------------------------- one batch
    def train_step(self, batch: Any, batch_idx: int, is_last: bool) -> Any:
        accum = self.settings.accumulate_grad_batches
        self.optimizer_stepped = False
        self.train_metrics.begin_step()
        self.barrier()  # user code follows: an in-flight save must hold the state before it
        if self.per_optimizer:
            outputs = [self._backward_for(opt, (batch, batch_idx, i), accum)
                       for i, opt in enumerate(self.parts.optimizers)]
        else:
            outputs = self._backward_for(None, (batch, batch_idx), accum)
        if (batch_idx + 1) % accum == 0 or is_last:
            self.optimizer_step()
        return outputs

    def _backward_for(self, optimizer, step_args: tuple, accum: int) -> Any:
        """training_step(*step_args) and its backward (with only ``optimizer``'s parameters, if given)."""
        parts = self.parts
        with frozen_except(optimizer, parts.optimizers):
            with parts.precision.autocast():
                output = (parts.training_step or parts.module.training_step)(*step_args)
            loss = loss_of(output)
            if loss is not None:
                self.last_loss = loss.detach()
                parts.precision.backward(loss / accum if accum > 1 else loss)
        return output

    def optimizer_step(self) -> None:
        s, plugin = self.settings, self.parts.precision
        self.barrier()
        for opt in self.parts.optimizers:
            if s.gradient_clip_val:
                plugin.unscale(opt)
                params = [q for g in opt.param_groups for q in g["params"] if q.grad is not None]
                if s.gradient_clip_algorithm == "value":
                    torch.nn.utils.clip_grad_value_(params, s.gradient_clip_val)
                else:
                    torch.nn.utils.clip_grad_norm_(params, s.gradient_clip_val)
            plugin.step(opt)
        plugin.update()
        for opt in self.parts.optimizers:
            opt.zero_grad(set_to_none=True)
        self.progress.global_step += 1
        self.optimizer_stepped = True

    def after_optimizer_step(self) -> None:
        step = self.progress.global_step
        for cfg in self.parts.schedulers:
            if cfg.interval == "step" and step % cfg.frequency == 0:
                step_scheduler(cfg, self.metrics)
        step_values = self.train_metrics.step_values
        if step_values:
            self.metrics.update(step_values)
            if step % self.settings.log_every_n_steps == 0:
                self._to_logger({k: v for k, v in step_values.items() if k in self.train_metrics.for_logger})

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Run the validation loop without disturbing training's random streams or gradients."""
        module, loader = self.parts.module, self.parts.val_loader
        if loader is None:
            return
        n_batches = _limit(self.settings.limit_val_batches, _length(loader))
        if n_batches == 0:
            return
        self.stage = "validate"
        was_training = module.training
        saved_batch = self._batch
        self.barrier()
        try:
            with preserved_rng(), torch.no_grad():
                module.eval()
                self.call("on_validation_start")
                for batch_idx, batch in enumerate(loader):
                    if batch_idx >= n_batches:
                        break
                    batch = move_to_device(batch, self.parts.device)
                    self._batch = batch
                    with self.parts.precision.autocast():
                        out = module.validation_step(batch, batch_idx)
                    for k, v in compat.validation_outputs(out).items():
                        self.log(k, v, on_step=False, on_epoch=True)
                means = self.val_metrics.epoch_means()
                self.metrics.update(means)
                self.call("on_validation_epoch_end")
        finally:
            self.stage = "train"
            self._batch = saved_batch
            module.train(was_training)
        self._to_logger(means)
        self.call("on_validation_end")
