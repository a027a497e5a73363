"""What self.log() records, with Lightning's semantics.

One ``Results`` collects the values logged during one stage run (a training epoch, one validation,
a test run). Per hook, ``on_step``/``on_epoch`` default as in Lightning (step-level in
``training_step`` and the batch/backward/optimizer hooks, epoch-level elsewhere); a value logged at
both levels appears as ``name_step`` and ``name_epoch`` (and ``name`` for callbacks). Epoch values are
reduced with ``reduce_fx`` (``mean`` weighted by batch size, ``sum``, ``max``, ``min``); a
torchmetrics-like object (``update``/``compute``/``reset``) is computed and reset at the epoch's end.
``Views`` are the three dicts the Trainer shows: ``callback_metrics``, ``logged_metrics`` and
``progress_bar_metrics``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from ember.errors import MisconfigurationError

if TYPE_CHECKING:
    from ember.loops.hooks import Hooks

STEP_HOOKS = frozenset({
    "training_step", "on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad", "optimizer_step", "optimizer_zero_grad", "backward",
    "configure_gradient_clipping", "lr_scheduler_step",
})  # fmt: skip
NO_LOG_HOOKS = frozenset({
    "setup", "teardown", "prepare_data", "configure_model", "configure_optimizers", "configure_callbacks",
    "on_fit_start", "on_fit_end", "on_sanity_check_start", "on_sanity_check_end", "on_train_end",
    "on_save_checkpoint", "on_load_checkpoint", "on_exception", "predict_step", "on_predict_start",
    "on_predict_end", "on_predict_epoch_start", "on_predict_epoch_end", "on_predict_batch_start",
    "on_predict_batch_end", "on_validation_model_eval", "on_validation_model_train", "on_test_model_eval",
    "on_test_model_train", "on_predict_model_eval",
})  # fmt: skip
REDUCTIONS = ("mean", "sum", "max", "min")
Reduce = Callable[[torch.Tensor, str], torch.Tensor]


def _scalar(name: str, value: Any) -> float | torch.Tensor:
    """A logged value as a float, or as a detached one-element tensor (read later: no device sync per step)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise MisconfigurationError(f"self.log({name!r}) needs a scalar; "
                                        f"received a tensor of shape {tuple(value.shape)}.")
        return value.detach()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        import numpy as np  # deferred: optional dependency (numpy)

        if isinstance(value, np.generic):
            return float(value)
    except ImportError:  # pragma: no cover
        pass
    raise MisconfigurationError(
        f"self.log({name!r}) needs a number, a scalar tensor or a metric object (update/compute/reset); "
        f"received {type(value).__name__}.")


def as_tensor(value: float | torch.Tensor) -> torch.Tensor:
    """A logged value as Lightning's metric dicts hold it: a tensor."""
    return value if isinstance(value, torch.Tensor) else torch.tensor(value)


def as_float(value: float | torch.Tensor) -> float:
    return float(value) if isinstance(value, torch.Tensor) else value


def is_metric(value: Any) -> bool:
    """A torchmetrics-like object, duck-typed: it can update, compute and reset."""
    return all(callable(getattr(value, a, None)) for a in ("update", "compute", "reset"))


def batch_size_of(batch: Any) -> int:
    """The size of the first dimension of the first tensor found in a batch (1 if there is none)."""
    if batch is None:
        return 1
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            n = batch_size_of(item)
            if n:
                return n
    return 1


def reduce_name(reduce_fx: Any) -> str:
    """``"mean"``/``"sum"``/``"max"``/``"min"``, also given as torch.mean, torch.sum, max, min..."""
    name = reduce_fx.lower() if isinstance(reduce_fx, str) else getattr(reduce_fx, "__name__", None)  # "MAX" too
    name = {"avg": "mean", "amax": "max", "amin": "min"}.get(name, name)
    if name not in REDUCTIONS:
        raise MisconfigurationError(f"reduce_fx must be one of {list(REDUCTIONS)} (or torch.mean, torch.sum, "
                                    f"torch.max, torch.min); received {reduce_fx!r}.")
    return name


def defaults_for(fx: str | None, on_step: bool | None, on_epoch: bool | None, name: str) -> tuple[bool, bool]:
    """Lightning's levels for a value logged in hook ``fx`` when on_step/on_epoch are not given."""
    if fx in NO_LOG_HOOKS:
        raise MisconfigurationError(f"self.log({name!r}) cannot be called inside {fx}(): Lightning does not log "
                                    "there either. Log from a step or an epoch hook.")
    step_level = fx in STEP_HOOKS
    return (step_level if on_step is None else bool(on_step)), (not step_level if on_epoch is None else bool(on_epoch))


@dataclass
class Views:
    """The dicts a stage publishes: for callbacks, for loggers and for the progress bar."""

    callback: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    pbar: dict[str, Any] = field(default_factory=dict)
    returned: dict[str, Any] = field(default_factory=dict)  # epoch values by logged name (validate/test return)


class _Entry:
    __slots__ = ("name", "on_step", "on_epoch", "prog_bar", "logger", "reduce", "sync", "metric", "total",
                 "weight", "step_value", "fx", "call")

    def __init__(self, name: str, on_step: bool, on_epoch: bool, prog_bar: bool, logger: bool, reduce: str,
                 sync: bool) -> None:
        self.name, self.on_step, self.on_epoch, self.prog_bar, self.logger = name, on_step, on_epoch, prog_bar, logger
        self.reduce, self.sync = reduce, sync
        self.metric = None
        self.total: Any = None
        self.weight = 0.0
        self.step_value: Any = None
        self.call: tuple | None = None  # the hook and arguments of the last call that was checked in full

    def names(self, step: bool) -> tuple[str, str]:
        """(name, forked name): ``x_step``/``x_epoch`` when logged at both levels."""
        if self.on_step and self.on_epoch:
            return self.name, f"{self.name}_step" if step else f"{self.name}_epoch"
        return self.name, self.name

    def add(self, value: Any, weight: float) -> None:
        r, t = self.reduce, self.total
        if r == "mean":
            self.total, self.weight = (value * weight if t is None else t + value * weight), self.weight + weight
        elif r == "sum":
            self.total = value if t is None else t + value
        elif t is None:
            self.total = value
        else:
            self.total = torch.maximum(torch.as_tensor(t), torch.as_tensor(value)) if r == "max" else torch.minimum(
                torch.as_tensor(t), torch.as_tensor(value))

    def epoch_value(self, reduce: Reduce | None) -> Any:
        if self.metric is not None:
            return self.metric.compute()
        total, weight = self.total, self.weight
        if total is None:
            return None
        if self.sync and reduce is not None:
            total = reduce(torch.as_tensor(total, dtype=torch.float32), "sum" if self.reduce == "mean" else self.reduce)
            if self.reduce == "mean":
                weight = reduce(torch.as_tensor(weight, dtype=torch.float32, device=total.device), "sum")
        return total / weight if self.reduce == "mean" else total


class Results:
    """The values logged during one stage run. ``training`` decides whether step values reach callbacks."""

    def __init__(self, training: bool, reduce: Reduce | None = None) -> None:
        self.training = training
        self.reduce = reduce
        self.entries: dict[str, _Entry] = {}
        self._stepped: list[_Entry] = []

    def log(self, fx: str | None, name: str, value: Any, prog_bar: bool = False, logger: bool = True,
            on_step: bool | None = None, on_epoch: bool | None = None, reduce_fx: Any = "mean",
            sync_dist: bool = False, batch_size: int | None = None, batch: Any = None) -> None:
        call = (fx, on_step, on_epoch, prog_bar, logger, reduce_fx, sync_dist)
        entry = self.entries.get(name)
        if entry is None or entry.call != call:  # else: this hook's call of every step, checked the first time
            entry = self._entry(name, call)
        if type(value) is torch.Tensor and value.numel() == 1:
            v: Any = value.detach()
        elif not isinstance(value, (torch.Tensor, float, int)) and is_metric(value):
            entry.metric = value
            if entry.on_step:
                entry.step_value = getattr(value, "_forward_cache", None)
                if entry.step_value is not None:
                    entry.step_value = _scalar(name, entry.step_value)
                    self._stepped.append(entry)
            return
        else:
            v = _scalar(name, value)
        if entry.on_step:
            if sync_dist and self.reduce is not None:
                v = self.reduce(torch.as_tensor(v, dtype=torch.float32), entry.reduce)
            entry.step_value = v
            self._stepped.append(entry)
        if entry.on_epoch:
            entry.add(v, float(batch_size if batch_size is not None else batch_size_of(batch)))

    def _entry(self, name: str, call: tuple) -> _Entry:
        """The entry a call logs to, with Lightning's defaults and checks (a second call of one name in one
        hook must repeat the first's arguments)."""
        fx, on_step, on_epoch, prog_bar, logger, reduce_fx, sync_dist = call
        on_step, on_epoch = defaults_for(fx, on_step, on_epoch, name)
        entry = self.entries.get(name)
        if (entry is not None and entry.fx == fx
                and not _same_call(entry, on_step, on_epoch, prog_bar, logger, reduce_fx)):
            raise MisconfigurationError(f"You called `self.log({name}, ...)` twice in `{fx}` with different arguments. "
                                        "This is not allowed (Lightning refuses it too): log it once per step.")
        if entry is None or (entry.on_step, entry.on_epoch) != (on_step, on_epoch):
            entry = self.entries[name] = _Entry(name, on_step, on_epoch, bool(prog_bar), bool(logger),
                                                reduce_name(reduce_fx), bool(sync_dist))
            entry.fx = fx
        entry.call = call if entry.fx == fx else None
        return entry

    def take_step(self) -> Views:
        """The values logged at step level since the last call."""
        out = Views()
        for e in self._stepped:
            name, forked = e.names(step=True)
            v = e.step_value
            if e.logger:
                out.log[forked] = v
            if self.training:
                out.callback[name] = out.callback[forked] = v
            if e.prog_bar:
                out.pbar[forked] = v
        self._stepped = []
        return out

    def epoch(self, finish: bool = True) -> Views:
        """The epoch's reduced values; ``finish`` resets metric objects and forgets the epoch."""
        out = Views()
        for e in self.entries.values():
            if not e.on_epoch:
                continue
            v = e.epoch_value(self.reduce)
            if v is None:
                continue
            if isinstance(v, torch.Tensor):
                v = v.detach()
            name, forked = e.names(step=False)
            if e.logger:
                out.log[forked] = v
            out.callback[name] = out.callback[forked] = out.returned[forked] = v
            if e.prog_bar:
                out.pbar[forked] = v
        if finish:
            for e in self.entries.values():
                if e.metric is not None and e.on_epoch:
                    e.metric.reset()
            self.entries = {}
        return out


def _same_call(entry: _Entry, on_step: bool, on_epoch: bool, prog_bar: bool, logger: bool, reduce_fx: Any) -> bool:
    """Whether a second ``self.log`` of one name in one hook has the arguments of the first (Lightning requires it)."""
    if ((entry.on_step, entry.on_epoch, entry.prog_bar, entry.logger)
            != (on_step, on_epoch, bool(prog_bar), bool(logger))):
        return False
    return entry.reduce == (reduce_fx if reduce_fx == "mean" else reduce_name(reduce_fx))


class MetricsHub:
    """The Trainer's view of everything logged: the three dicts, and the logger they are sent to.
    ``live`` is a stage whose epoch has ended but whose epoch-end hooks are still running: its values
    are visible in ``callback_metrics`` while they run, as in Lightning."""

    def __init__(self, logger: Any = None) -> None:
        self.logger = logger  # None on ranks other than 0, which write no logs
        self.reset()

    def reset(self) -> None:
        self.callback: dict[str, Any] = {}
        self.logged: dict[str, Any] = {}
        self.pbar: dict[str, Any] = {}
        self.live: Results | None = None

    def callback_metrics(self) -> dict[str, Any]:
        if self.live is not None:
            self.callback.update(self.live.epoch(finish=False).callback)
        return self.callback

    def publish(self, views: Views, *, to_logger: bool, step: int, epoch: int) -> None:
        self.callback.update(views.callback)
        self.pbar.update(views.pbar)
        if views.log:
            self.logged.update(views.log)  # Lightning's logged_metrics: the latest values, on every rank
        if to_logger and views.log and self.logger is not None:  # the rank that writes
            self.logger.log_metrics({k: as_float(v) for k, v in views.log.items()}, step=step, epoch=epoch)


class LogSink:
    """Where ``self.log`` goes: the stage's Results, with the hook running, the batch and the loader."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.results: Results | None = None
        self.batch: Any = None
        self.dataloader_idx: int | None = None

    @contextlib.contextmanager
    def into(self, results: Results) -> Iterator[Results]:
        """``self.log`` goes to ``results`` inside the block; the sink's results, batch and loader index are
        what they were after it (an evaluation inside fit hands back to fit's results).

        Args:
            results: the stage's Results.
        """
        outer = (self.results, self.batch, self.dataloader_idx)
        self.results = results
        try:
            yield results
        finally:
            self.results, self.batch, self.dataloader_idx = outer

    def __call__(self, name: str, value: Any, *, prog_bar: bool = False, logger: bool = True,
                 on_step: bool | None = None, on_epoch: bool | None = None, reduce_fx: Any = "mean",
                 sync_dist: bool = False, add_dataloader_idx: bool = True, batch_size: int | None = None) -> None:
        results = self.results
        if results is None:
            defaults_for(self.hooks.current_fx, None, None, name)  # a hook Lightning refuses: say so
            raise MisconfigurationError(f"self.log({name!r}) was called where nothing is being logged "
                                        f"(in {self.hooks.current_fx}); log from a step or an epoch hook.")
        if add_dataloader_idx and self.dataloader_idx is not None:
            name = f"{name}/dataloader_idx_{self.dataloader_idx}"
        results.log(self.hooks.current_fx, name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, sync_dist,
                    batch_size, self.batch)
