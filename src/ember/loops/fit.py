"""The fit loop: epochs, batches, optimizer steps, validation. It states facts; callbacks and managers decide.

The loop gets what it needs explicitly (settings, the parts it trains, a hook caller, the metrics
hub, the barrier before user code) and owns what it changes: its progress, ``should_stop``. Hooks
run in Lightning's order (``tests/test_hook_order.py``); validation is ``ember.loops.evaluation``'s loop."""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Any, Callable

import torch

from ember.checkpoint.state import gradients, restore_gradients
from ember.core.module import Module
from ember.core.optimizer import ManualSteps, StepCounted, Toggled, check_manual_settings
from ember.errors import MisconfigurationError
from ember.loops.data import checked_batches, length, limit_batches, sanity_batches
from ember.loops.evaluation import EvalLoop
from ember.loops.hooks import Hooks, overrides, takes_batch_idx
from ember.loops.optim import SchedulerConfig, frozen_except, step_scheduler
from ember.loops.parts import FitParts, batch_outputs, loss_of  # noqa: F401 - re-exported
from ember.loops.progress import Progress
from ember.loops.results import LogSink, MetricsHub, Results, as_float
from ember.loops.settings import FitSettings
from ember.loops.valcheck import ValSchedule
from ember.seed import get_rng_state, set_rng_state

_NO_CONTEXT = contextlib.nullcontext()


class FitLoop(ManualSteps):
    """Runs epochs until max_epochs/max_steps or a stop request. Stateful: its state is the run's position.

    ``hooks(hook, *args)`` runs a hook on the callbacks and the module; ``barrier()`` is called before
    any user code runs (a background save may still be copying the state); ``stop_requested()`` is
    asked at step boundaries; ``hub`` receives what is logged; ``reduce`` (set for distributed runs)
    combines ``sync_dist=True`` values across processes.
    """

    def __init__(self, settings: FitSettings, parts: FitParts, *, hooks: Hooks, barrier: Callable[[], None],
                 stop_requested: Callable[[], bool], hub: MetricsHub, sink: LogSink, bar: Any = None,
                 reduce: Callable[[torch.Tensor, str], torch.Tensor] | None = None) -> None:
        self.settings, self.parts = settings, parts
        self.call, self.barrier, self.stop_requested = hooks, barrier, stop_requested
        self.hub, self.sink, self.bar = hub, sink, bar
        self.progress = Progress()
        self.val_schedule = ValSchedule(lambda: self.settings, lambda: self.reduce)  # when validation runs
        self.accumulate_grad_batches = settings.accumulate_grad_batches  # a callback may change it per epoch
        self.should_stop = self.optimizer_stepped = self.is_last_batch = False
        self.in_epoch_end = False  # epoch-end hooks are running: current_epoch still names the old epoch
        self.ended_part_way = False  # training ended mid-epoch after the epoch's hooks (max_steps, should_stop)
        self.last_loss: torch.Tensor | None = None
        self.results = sink.results = Results(training=True)  # on_train_start may log too
        self.reduce = reduce
        self.manual = not getattr(parts.module, "automatic_optimization", True)
        if self.manual:
            check_manual_settings(settings)
        self.optimizer_views = [StepCounted(o, self.manual_step if self.manual else self._auto_step)
                                for o in parts.optimizers]
        self.toggled = Toggled()
        self._pending_grads = False  # backward ran since the last optimizer step (a window is open)
        self._last_stepped = False  # the latest batch ended in an optimizer step (or was a manual one)
        self._in_step = False  # inside the loop's own optimizer step (module.optimizer_step may step)
        self._resume: dict[str, Any] | None = None  # the checkpoint's loop state, consumed by the first epoch
        module = parts.module
        self.per_optimizer = "optimizer_idx" in inspect.signature(module.training_step).parameters
        self.with_batch_idx = takes_batch_idx(module.training_step)  # training_step(self, batch) is fine
        self._custom = {h: overrides(module, Module, h) for h in ("optimizer_step", "optimizer_zero_grad", "backward",
                                                                  "configure_gradient_clipping", "lr_scheduler_step")}

    @property
    def reduce(self) -> Callable[[torch.Tensor, str], torch.Tensor] | None:
        """Combines ``sync_dist=True`` values across processes (``reduce(tensor, "mean"|"sum"|"max"|"min")``);
        None: values stay local. Settable at any time (the distributed strategy sets it)."""
        return self.results.reduce

    @reduce.setter
    def reduce(self, fn: Callable[[torch.Tensor, str], torch.Tensor] | None) -> None:
        self.results.reduce = fn

    # ---------------------------------------------------------------- Stateful
    def state_dict(self) -> dict[str, Any]:
        """Epoch, step, data position, every RNG state and mid-window gradients: exact resume."""
        state = self.progress.state_dict()
        state["data"] = self.parts.train_data.state_dict()
        state["rng"] = get_rng_state()
        keep = self.manual or self._pending_grads  # by hand, gradients may be accumulated across batches
        state["accumulated_grads"] = gradients(self.parts.module) if keep else {}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.progress.load_state_dict(state)
        self._resume = state

    # ---------------------------------------------------------------- the loop
    def run(self) -> None:
        p = self.progress
        resume = self._resume
        if resume is not None and p.epoch_done:  # resumed at an epoch end: no part-epoch to rebuild
            if resume.get("rng") is not None:
                set_rng_state(resume["rng"])
            self.parts.train_data.restore_epoch_end(resume.get("data"))
            self._resume = None
        while not self.stop_requested():
            if self.should_stop:
                if self.settings.minimum_reached(p.epoch + int(p.epoch_done), p.global_step):
                    break
                self.should_stop = False  # Lightning: a stop before min_epochs/min_steps waits for them
            if p.epoch_done:
                if self.settings.limits_reached(p.epoch + 1, p.global_step):
                    break
                p.epoch, p.batch, p.epoch_done = p.epoch + 1, 0, False
            elif self.settings.limits_reached(p.epoch, p.global_step):
                break
            self.run_epoch()
            if not p.epoch_done:  # stopped part-way (max_steps, should_stop or a stop request)
                break

    def sanity_check(self) -> None:
        """Lightning's sanity check: a few validation batches before training; nothing they log is kept."""
        n, loaders, limit = self.settings.num_sanity_val_steps, self.parts.val_loaders, self.settings.limit_val_batches
        if n and loaders and limit:
            self.parts.val_limit = limit  # Lightning fixes validation's count here
            self.eval_loop("sanity").run(loaders, sanity_batches(n, limit, loaders))  # (no more than limit_val_batches)
            self.hub.reset()  # Lightning: what the sanity check logged is gone when training starts

    def prepare(self) -> bool:
        """After the sanity check, as Lightning sets up fit's data: an epoch's batches (refusing a fraction that leaves
        none) and the validation schedule (it may refuse). False: no training batch, so fit does not train."""
        limit = self.settings.limit_train_batches  # 0: Lightning does not even look at the loader
        n = self.parts.train_batches = limit and checked_batches("train", limit, length(self.parts.train_data.loader))
        self.val_schedule.setup(n)
        return n != 0

    def _epoch_batches(self) -> int | float:
        """An epoch's batches: as fit set its data up (a later limit_train_batches waits for a reload, as Lightning)."""
        if (n := self.parts.train_batches) is None:
            n = limit_batches(self.settings.limit_train_batches, length(self.parts.train_data.loader))
        return n

    def eval_loop(self, stage: str) -> EvalLoop:
        """Under ``no_grad`` whatever ``inference_mode`` says (Lightning's): a step may ``enable_grad()``."""
        parts = self.parts
        return EvalLoop(stage, parts.module, self.call, self.sink, self.hub, device=parts.device,
                        precision=parts.precision, inference_mode=False, reduce=self.reduce,
                        step=lambda: (self.log_step(), self.progress.epoch), bar=self.bar, before=parts.before_eval)

    def log_step(self) -> int:
        """The step the loggers get, as Lightning numbers it: batches that stepped before the latest one
        (so ``log_every_n_steps=4`` logs at 3, 7, ...; epoch-end values at the last batch's number)."""
        return self.progress.batches_stepped - int(self._last_stepped)

    def _start_epoch(self, validated_after):
        """The epoch's batch iterator, resumed part-way when the loop was restored mid-epoch.
        ``validated_after(batches)``: a validation followed that batch (and released the gradients)."""
        p, parts = self.progress, self.parts
        resume, self._resume = self._resume, None
        it, skipped = parts.train_data.epoch_iterator(p.epoch, p.batch if resume else 0,
                                                      resume.get("data") if resume else None)
        if resume is not None:
            if resume.get("rng") is not None:
                set_rng_state(resume["rng"])
            if skipped != p.batch:
                p.batch = skipped
            elif resume.get("accumulated_grads") and not (self.manual and validated_after(p.batch)):
                restore_gradients(parts.module, resume["accumulated_grads"])
                self._pending_grads = True
        return it

    def _maybe_reload(self) -> None:
        n, p = self.settings.reload_dataloaders_every_n_epochs, self.progress
        if n and p.epoch > 0 and p.epoch % n == 0 and p.batch == 0 and self.parts.reload is not None:
            self.parts.reload_loaders()
            self.parts.train_batches = self._epoch_batches()
            self.val_schedule.setup(self.parts.train_batches)  # Lightning: the interval checked, its clock restarted

    def run_epoch(self) -> None:
        p, parts = self.progress, self.parts
        self._maybe_reload()
        parts.module.train()
        self.call.stage = "train"
        self.call("on_train_epoch_start")
        n_batches, sched = self._epoch_batches(), self.val_schedule
        if not sched.ready:  # a tuner's search runs before fit's prepare()
            sched.setup(n_batches)
        validates = bool(parts.val_loaders) and sched.epoch_validates(p.epoch)
        it = self._start_epoch(lambda b: validates and b < n_batches and sched.due(b, p.batches_total, False, False))
        bar = self.bar.start_epoch(p.epoch, None if math.isinf(n_batches) else n_batches, p.batch)
        batch_idx, ended = p.batch, "last"
        while batch_idx < n_batches:
            try:
                batch = next(it)
            except StopIteration:
                ended = "exhausted"
                break
            batch = self.sink.batch = self.call.transfer(batch, parts.device)
            if self.call("on_train_batch_start", batch, batch_idx) == -1:
                ended = "cancelled"  # Lightning: the module's on_train_batch_start returning -1 ends the epoch early
                break
            is_last = self.is_last_batch = batch_idx + 1 >= n_batches
            outputs = self.train_step(batch, batch_idx, is_last)
            p.batch, p.batches_total = batch_idx + 1, p.batches_total + 1
            self.after_batch()
            self.call("on_train_batch_end", outputs, batch, batch_idx)
            if not is_last and validates and self._validate_now():
                self.validate()
            bar.update(p.global_step, self.last_loss, self.hub.pbar, self.hub.pbar.keys())
            batch_idx += 1
            if self.optimizer_stepped or self.manual:  # a step boundary: a stop may end the epoch here
                if self.stop_requested():
                    bar.close()
                    return  # a stop signal: saved where it is, ends at once
                if not is_last and (self._stop_now() or self.settings.limits_reached(p.epoch, p.global_step)):
                    bar.close()
                    self.epoch_end_hooks()  # Lightning: ended part-way, but the epoch's hooks still run
                    self.ended_part_way = True  # ... and then counts the epoch as done (current_epoch)
                    return
        self.sink.batch = None
        if self._pending_grads and not self.manual:  # a loader without a length ended inside a window
            self.optimizer_step(batch_idx)
            self.after_batch()
        bar.close()
        self.end_epoch(validate=validates and self._validate_at_end(ended))

    def _validate_now(self) -> bool:
        """Validation after this batch of an epoch that validates: as the schedule says, or (Lightning) before
        a stop part-way through it (``max_time``'s Timer, ``trainer.should_stop`` in a batch hook)."""
        p = self.progress
        if self.val_schedule.due(p.batch, p.batches_total, False):
            return True
        return (self.optimizer_stepped or self.manual) and self._stop_now()

    def _validate_at_end(self, ended: str) -> bool:
        """Validation as the epoch ends: after its last batch as after the others (or before a stop). A loader
        without a length decided on its last batch already, unless ``val_check_batch`` is inf (validate at the
        end); after ``on_train_batch_start`` returned -1, or with no batch, none (Lightning's)."""
        p = self.progress
        if not p.batch or ended == "cancelled":  # (no batch: Lightning does not even run the epoch)
            return False
        if ended == "last":
            return self.val_schedule.due(p.batch, p.batches_total, True) or self._stop_now()
        return self.val_schedule.batch == math.inf

    def _stop_now(self) -> bool:
        return self.should_stop and self.settings.minimum_reached(self.progress.epoch, self.progress.global_step)

    def end_epoch(self, validate: bool = True) -> None:
        """Validation, epoch-interval schedulers, then the epoch's hooks: a finished epoch."""
        p = self.progress
        if validate:
            self.validate()
        metrics = {**self.hub.callback, **self.results.epoch(finish=False).callback}
        for cfg in self.parts.schedulers:
            if cfg.interval == "epoch" and (p.epoch + 1) % cfg.frequency == 0 and not self.manual:
                self.step_scheduler(cfg, metrics)
        p.epoch_done = True
        self.epoch_end_hooks()

    def epoch_end_hooks(self) -> None:
        """on_train_epoch_end (monitoring callbacks after the module), then the epoch's values published."""
        p = self.progress
        self.in_epoch_end = True
        self.hub.live = self.results  # callbacks see what on_train_epoch_end logs while the hooks run
        try:
            self.call("on_train_epoch_end", monitoring=False)
            self.call("on_train_epoch_end", monitoring=True)
        finally:
            self.in_epoch_end = False
            self.hub.live = None
        self.hub.publish(self.results.epoch(), to_logger=True, step=self.log_step(), epoch=p.epoch)
        if self.hub.logger is not None:
            self.hub.logger.flush()

    def step_scheduler(self, cfg: SchedulerConfig, metrics: dict) -> None:
        """Step one scheduler; through the module's lr_scheduler_step when it overrides it."""
        if not self._custom["lr_scheduler_step"]:
            step_scheduler(cfg, metrics)
        elif cfg.monitor is not None and cfg.monitor not in metrics:
            if cfg.strict:
                raise MisconfigurationError(f"the LR scheduler monitors {cfg.monitor!r}, which was not logged; logged "
                                            f"metrics are {sorted(metrics)}. Log it, or set 'strict': False.")
        else:
            self.call.module_hook("lr_scheduler_step", cfg.scheduler,
                                  None if cfg.monitor is None else as_float(metrics[cfg.monitor]))

    def validate(self) -> None:
        """One validation pass (``ember.loops.evaluation``): training's random streams and modes are kept."""
        if self.parts.val_loaders and self.settings.limit_val_batches:
            if self.manual or not self._pending_grads:  # Lightning frees the gradients, unless mid-window
                self.call.module_hook("on_validation_model_zero_grad")
            limit = self.parts.val_limit = self.parts.val_limit or self.settings.limit_val_batches  # (see sanity_check)
            self.eval_loop("validate").run(self.parts.val_loaders, limit)
            self.call.stage = "train"  # the sink is back on fit's results (EvalLoop's sink.into)
            self.val_schedule.validated()

    # ---------------------------------------------------------------- one batch
    def train_step(self, batch: Any, batch_idx: int, is_last: bool) -> Any:
        self.optimizer_stepped = False
        call, module = self.call, self.parts.module
        self.barrier()  # user code follows: an in-flight save must hold the state before it
        outer, call.current_fx = call.current_fx, "training_step"
        try:
            if self.manual:
                with self.parts.precision.autocast():
                    out = (self.parts.training_step or module.training_step)(*self._step_args(batch, batch_idx))
                if isinstance(out, torch.Tensor) or (isinstance(out, dict) and "loss" in out):
                    self.last_loss = loss_of(out).detach()  # shown, never stepped: training_step steps
                return batch_outputs(out, 1)
            accum = self.accumulate_grad_batches
            if self.per_optimizer:
                outputs = [self._backward_for(opt, (*self._step_args(batch, batch_idx), i), accum, batch_idx)
                           for i, opt in enumerate(self.parts.optimizers)]
            else:
                outputs = self._backward_for(None, self._step_args(batch, batch_idx), accum, batch_idx)
        finally:
            call.current_fx = outer
        if (batch_idx + 1) % accum == 0 or is_last:
            self.optimizer_step(batch_idx)
        if self.per_optimizer:
            return [batch_outputs(o, accum) for o in outputs]
        return batch_outputs(outputs, accum, self.last_loss if isinstance(outputs, torch.Tensor) else None)

    def _step_args(self, batch: Any, batch_idx: int) -> tuple:
        return (batch, batch_idx) if self.with_batch_idx else (batch,)

    def _backward_for(self, optimizer, step_args: tuple, accum: int, batch_idx: int) -> Any:
        """training_step(*step_args) and its backward (with only ``optimizer``'s parameters, if given)."""
        parts = self.parts
        step = parts.training_step or parts.module.training_step
        with frozen_except(optimizer, parts.optimizers) if optimizer is not None else _NO_CONTEXT:
            if parts.precision.mode == "32":  # the common case: no context to build and enter per step
                output = step(*step_args)
            else:
                with parts.precision.autocast():
                    output = step(*step_args)
            loss = loss_of(output)
            if loss is not None:
                self.last_loss = loss.detach()
                if not self._pending_grads:  # the first batch of a window: Lightning zeroes here
                    self.zero_grad(batch_idx)
                self.backward(loss / accum if accum > 1 else loss)
        return output

    def zero_grad(self, batch_idx: int) -> None:
        for i, opt in enumerate(self.parts.optimizers):
            self.call("on_before_zero_grad", opt)
            if self._custom["optimizer_zero_grad"]:
                self.call.module_hook("optimizer_zero_grad", self.progress.epoch, batch_idx, opt)
            else:
                opt.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self.call("on_before_backward", loss)
        if self._custom["backward"]:
            self.call.module_hook("backward", loss, *args, **kwargs)
        else:
            self.parts.precision.backward(loss)
        self._pending_grads = True
        self.call("on_after_backward")

    def optimizer_step(self, batch_idx: int) -> None:
        s, plugin, module = self.settings, self.parts.precision, self.parts.module
        self.barrier()
        for opt, view in zip(self.parts.optimizers, self.optimizer_views):
            plugin.unscale(opt)
            self.call("on_before_optimizer_step", opt)
            if self._custom["configure_gradient_clipping"]:
                self.call.module_hook("configure_gradient_clipping", opt, s.gradient_clip_val,
                                      s.gradient_clip_algorithm)
            elif s.gradient_clip_val:
                module.clip_gradients(opt, s.gradient_clip_val, s.gradient_clip_algorithm)
            if self._custom["optimizer_step"]:
                self._in_step = True
                try:
                    self.call.module_hook("optimizer_step", self.progress.epoch, batch_idx, view, None)
                finally:
                    self._in_step = False
            else:
                plugin.step(opt)
        plugin.update()
        self._pending_grads = False
        self.progress.global_step += 1
        self.optimizer_stepped = True

    def after_batch(self) -> None:
        """Step-interval schedulers after an optimizer step; this batch's step values to the hub."""
        step = self.progress.global_step
        if self.optimizer_stepped and not self.manual:
            for cfg in self.parts.schedulers:
                if cfg.interval == "step" and step % cfg.frequency == 0:
                    self.step_scheduler(cfg, self.hub.callback)
        views = self.results.take_step()
        p, self._last_stepped = self.progress, self.optimizer_stepped or self.manual
        p.batches_stepped += self._last_stepped
        logged = self.log_step()  # Lightning logs every n-th batch by this count
        due = self._last_stepped and (logged + 1) % self.settings.log_every_n_steps == 0  # not mid-window
        self.hub.publish(views, to_logger=due or self.should_stop, step=logged, epoch=p.epoch)
