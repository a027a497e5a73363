"""The fit loop: epochs, batches, optimizer steps, validation. It states facts; callbacks decide."""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ember.checkpoint.state import restore_gradients
from ember.data import ResumableLoader
from ember.metrics import MetricStore
from ember.seed import preserved_rng, set_rng_state


@dataclass
class Progress:
    """Where the loop is. Saved in every full checkpoint under ``loops.fit``."""

    epoch: int = 0            # the epoch being trained (or just finished, when epoch_done)
    batch: int = 0            # batches consumed in this epoch
    global_step: int = 0      # optimizer steps taken
    epoch_done: bool = False  # the epoch finished (validation, schedulers and epoch-end hooks ran)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("epoch", "batch", "global_step", "epoch_done"):
            setattr(self, k, state[k])


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


def _limit(limit: int | float, total: int | None, what: str) -> int | float:
    """Batches to use per epoch: an int, or a fraction of the loader's length."""
    if isinstance(limit, bool):
        raise ValueError(f"{what} must be an int or a float in [0, 1]; received {limit!r}")
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
    from ember.errors import MisconfigurationError

    raise MisconfigurationError(
        f"training_step must return a loss tensor, a dict with a 'loss' entry, or None (skip the batch); "
        f"received {type(output).__name__}{' with keys ' + str(sorted(output)) if isinstance(output, dict) else ''}."
    )


class FitLoop:
    """Runs epochs until max_epochs/max_steps or a stop request; owned by the Trainer."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.progress = Progress()
        self.train_data: ResumableLoader | None = None
        self.val_loader = None
        self.resume: dict[str, Any] | None = None  # the checkpoint's loop entry, consumed by the first epoch
        self.resume_rng: dict[str, Any] | None = None
        self.resume_grads: dict[str, torch.Tensor] | None = None
        self.train_metrics = MetricStore()
        self.val_metrics = MetricStore()
        self.stage = "train"
        self._batch = None
        self.last_loss: torch.Tensor | None = None
        self.per_optimizer = False
        self.in_epoch_end = False  # epoch-end hooks are running: current_epoch still names the old epoch

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state = self.progress.state_dict()
        if self.train_data is not None:
            state["data"] = self.train_data.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], rng: dict[str, Any] | None = None,
                        grads: dict[str, torch.Tensor] | None = None) -> None:
        self.progress.load_state_dict(state)
        self.resume, self.resume_rng, self.resume_grads = state, rng, grads

    # ---------------------------------------------------------------- logging sink
    def log(self, name: str, value: Any, prog_bar: bool = False, on_step: bool | None = None,
            on_epoch: bool | None = None, logger: bool = True, batch_size: int | None = None) -> None:
        training = self.stage == "train"
        store = self.train_metrics if training else self.val_metrics
        store.record(name, value, training, self._batch, prog_bar, on_step, on_epoch, logger, batch_size)

    # ---------------------------------------------------------------- the loop
    def limits_reached(self, epoch: int) -> bool:
        t = self.trainer
        if t.max_steps is not None and t.max_steps >= 0 and self.progress.global_step >= t.max_steps:
            return True
        return t.max_epochs is not None and t.max_epochs >= 0 and epoch >= t.max_epochs

    def run(self) -> None:
        t = self.trainer
        p = self.progress
        if self.resume is not None and p.epoch_done:  # resumed at an epoch end: no part-epoch to rebuild
            if self.resume_rng is not None:
                set_rng_state(self.resume_rng)
            self.resume = None
        self.per_optimizer = "optimizer_idx" in inspect.signature(t.module.training_step).parameters
        while not t.should_stop:
            if p.epoch_done:
                if self.limits_reached(p.epoch + 1):
                    break
                p.epoch, p.batch, p.epoch_done = p.epoch + 1, 0, False
            elif self.limits_reached(p.epoch):
                break
            self.run_epoch()
            if not p.epoch_done:  # stopped part-way (max_steps or a stop request)
                break
            t._check_stop_request()

    def run_epoch(self) -> None:
        t = self.trainer
        p = self.progress
        module = t.module
        module.train()
        t._call("on_train_epoch_start")
        total = _length(self.train_data.loader)
        n_batches = _limit(t.limit_train_batches, total, "limit_train_batches")
        resume, self.resume = self.resume, None
        it, skipped = self.train_data.epoch_iterator(p.epoch, p.batch if resume else 0,
                                                     resume.get("data") if resume else None)
        if resume is not None:
            if self.resume_rng is not None:
                set_rng_state(self.resume_rng)
            if skipped != p.batch:
                p.batch = skipped
            elif self.resume_grads:
                restore_gradients(module, self.resume_grads)
        self.resume_grads = None
        val_every = self._val_interval(n_batches)
        bar = t._progress_bar.start_epoch(p.epoch, None if math.isinf(n_batches) else n_batches, p.batch)
        batch_idx = p.batch
        stepped_at_end = True
        while batch_idx < n_batches:
            try:
                batch = next(it)
            except StopIteration:
                break
            batch = move_to_device(batch, t.device)
            self._batch = batch
            t._call("on_train_batch_start", batch, batch_idx)
            is_last = batch_idx + 1 >= n_batches
            outputs = self.train_step(batch, batch_idx, is_last)
            stepped_at_end = t.optimizer_stepped
            p.batch = batch_idx + 1
            if t.optimizer_stepped:
                self.after_optimizer_step()
            if val_every and p.batch % val_every == 0 and not is_last:
                self.validate()
            t._call("on_train_batch_end", outputs, batch, batch_idx)
            bar.update(p.global_step, self.last_loss, t._metrics, self.train_metrics.prog_bar)
            batch_idx += 1
            if t.optimizer_stepped and (t._check_stop_request() or t.should_stop or self.limits_reached(p.epoch)):
                bar.close()
                return
        self._batch = None
        if not stepped_at_end:  # a loader without a length ended inside an accumulation window
            self.optimizer_step()
            self.after_optimizer_step()
        bar.close()
        self.end_epoch()

    def end_epoch(self) -> None:
        t = self.trainer
        p = self.progress
        means = self.train_metrics.epoch_means()
        t._metrics.update(means)
        if self.val_loader is not None and (p.epoch + 1) % t.check_val_every_n_epoch == 0:
            self.validate()
        t._log_to_logger(means)
        for cfg in t.lr_scheduler_configs:
            if cfg.interval == "epoch" and (p.epoch + 1) % cfg.frequency == 0:
                t._step_scheduler(cfg)
        p.epoch_done = True
        self.in_epoch_end = True
        try:
            t._call("on_train_epoch_end")
        finally:
            self.in_epoch_end = False
        t._flush_logger()

    def _val_interval(self, n_batches) -> int:
        t = self.trainer
        if self.val_loader is None:
            return 0
        v = t.val_check_interval
        if isinstance(v, float):
            if v >= 1.0 or math.isinf(n_batches):
                return 0
            return max(1, int(n_batches * v))
        return v

    # ---------------------------------------------------------------- one batch
    def train_step(self, batch: Any, batch_idx: int, is_last: bool) -> Any:
        t = self.trainer
        accum = t.accumulate_grad_batches
        t.optimizer_stepped = False
        self.train_metrics.begin_step()
        if self.per_optimizer:
            outputs = [self._backward_for(opt, (batch, batch_idx, i), accum) for i, opt in enumerate(t.optimizers)]
        else:
            outputs = self._backward_for(None, (batch, batch_idx), accum)
        if (batch_idx + 1) % accum == 0 or is_last:
            self.optimizer_step()
        return outputs

    def _backward_for(self, optimizer, step_args: tuple, accum: int) -> Any:
        """training_step(*step_args) and its backward (with only ``optimizer``'s parameters, if given)."""
        t = self.trainer
        frozen = t._toggle(optimizer) if optimizer is not None else None
        try:
            with t.precision_plugin.autocast():
                output = t.module.training_step(*step_args)
            loss = loss_of(output)
            if loss is not None:
                self.last_loss = loss.detach()
                t.precision_plugin.backward(loss / accum if accum > 1 else loss)
        finally:
            if frozen:
                for param in frozen:
                    param.requires_grad_(True)
        return output

    def optimizer_step(self) -> None:
        t = self.trainer
        t._writer.snapshot_barrier()  # a background save may still be copying the weights
        plugin = t.precision_plugin
        for opt in t.optimizers:
            if t.gradient_clip_val:
                plugin.unscale(opt)
                params = [q for g in opt.param_groups for q in g["params"] if q.grad is not None]
                if t.gradient_clip_algorithm == "value":
                    torch.nn.utils.clip_grad_value_(params, t.gradient_clip_val)
                else:
                    torch.nn.utils.clip_grad_norm_(params, t.gradient_clip_val)
            plugin.step(opt)
        plugin.update()
        for opt in t.optimizers:
            opt.zero_grad(set_to_none=True)
        self.progress.global_step += 1
        t.optimizer_stepped = True

    def after_optimizer_step(self) -> None:
        t = self.trainer
        for cfg in t.lr_scheduler_configs:
            if cfg.interval == "step" and self.progress.global_step % cfg.frequency == 0:
                t._step_scheduler(cfg)
        step_values = self.train_metrics.step_values
        if step_values:
            t._metrics.update(step_values)
            if self.progress.global_step % t.log_every_n_steps == 0:
                t._log_to_logger({k: v for k, v in step_values.items() if k in self.train_metrics.for_logger})

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Run the validation loop without disturbing training's random streams or gradients."""
        t = self.trainer
        module = t.module
        if self.val_loader is None:
            return
        total = _length(self.val_loader)
        n_batches = _limit(t.limit_val_batches, total, "limit_val_batches")
        if n_batches == 0:
            return
        self.stage = "validate"
        was_training = module.training
        saved_batch = self._batch
        try:
            with preserved_rng(), torch.no_grad():
                module.eval()
                t._call("on_validation_start")
                for batch_idx, batch in enumerate(self.val_loader):
                    if batch_idx >= n_batches:
                        break
                    batch = move_to_device(batch, t.device)
                    self._batch = batch
                    with t.precision_plugin.autocast():
                        out = module.validation_step(batch, batch_idx)
                    if isinstance(out, dict):  # the old style: a dict of scalars feeds the epoch means
                        for k, v in out.items():
                            if isinstance(v, torch.Tensor) and v.numel() == 1 or isinstance(v, (int, float)):
                                self.log(k, v, on_step=False, on_epoch=True)
                means = self.val_metrics.epoch_means()
                t._metrics.update(means)
                t._call("on_validation_epoch_end")
        finally:
            self.stage = "train"
            self._batch = saved_batch
            module.train(was_training)
        t._log_to_logger(means)
        t._call("on_validation_end")
