"""The evaluation loop: one validation, test, prediction or sanity-check pass over some loaders.

Used by ``trainer.validate/test/predict`` and by fit (its validations and the sanity check). It runs
without disturbing training: every global random stream is as it was afterwards, gradients are off
(``torch.inference_mode`` or ``no_grad``), and every submodule gets its train/eval mode back (unless
the module overrides ``on_*_model_train``)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from ember import compat
from ember.core.hooks import ModelHooks
from ember.loops.data import length, limit_batches
from ember.loops.hooks import Hooks, takes_batch_idx
from ember.loops.results import LogSink, MetricsHub, Results, as_float
from ember.seed import preserved_rng


@dataclass(frozen=True)
class Stage:
    """The names one kind of evaluation uses."""

    prefix: str      # on_{prefix}_start, ...
    step: str        # the module's step method
    model_eval: str
    model_train: str | None
    title: str


STAGES = {
    "validate": Stage("validation", "validation_step", "on_validation_model_eval", "on_validation_model_train",
                      "Validate"),
    "sanity": Stage("validation", "validation_step", "on_validation_model_eval", "on_validation_model_train",
                    "Sanity check"),
    "test": Stage("test", "test_step", "on_test_model_eval", "on_test_model_train", "Test"),
    "predict": Stage("predict", "predict_step", "on_predict_model_eval", None, "Predict"),
}
BAR_TITLES = {"validate": "Validation", "sanity": "Sanity Checking", "test": "Testing", "predict": "Predicting"}


class EvalLoop:
    """One pass of ``stage`` ("validate", "test", "predict" or "sanity") over ``loaders``."""

    def __init__(self, stage: str, module, hooks: Hooks, sink: LogSink, hub: MetricsHub, *, device: torch.device,
                 precision, inference_mode: bool = True, reduce: Callable | None = None,
                 step: Callable[[], tuple[int, int]] = lambda: (0, 0), bar: Any = None,
                 before: Callable[[], None] | None = None) -> None:
        self.stage, self.names = stage, STAGES[stage]
        self.module, self.hooks, self.sink, self.hub = module, hooks, sink, hub
        self.device, self.precision, self.inference_mode, self.reduce = device, precision, inference_mode, reduce
        self.step = step  # (global step, epoch) for the logger
        self.bar = bar  # the Trainer's ProgressBar (None: no bars)
        self.before = before  # runs first in each run (under DDP: rank 0's buffers to every rank)
        self.with_batch_idx = takes_batch_idx(getattr(module, self.names.step, None))  # step(self, batch) works

    def run(self, loaders: list, limit: int | float | list, return_predictions: bool = False) -> list:
        """Validate/test: one dict of epoch metrics per loader. Predict: the predict_step outputs
        (a list per loader when there are several), or [] without ``return_predictions``. ``limit``: the
        ``limit_*_batches`` of every loader, or a list of one per loader."""
        module, call, n = self.module, self.hooks, self.names
        sink, outer_stage = self.sink, call.stage
        call.stage = self.stage
        results = Results(training=False, reduce=self.reduce)
        modes = [(m, m.training) for m in module.modules()]
        outputs: list[list] = [[] for _ in loaders]
        grad_off = torch.inference_mode() if inference_mode_allowed(module, self.inference_mode) else torch.no_grad()
        call.barrier()  # user code follows: an in-flight save must hold the state before it
        if self.before is not None:
            self.before()
        try:
            with sink.into(results), preserved_rng(), grad_off:
                if self.stage == "sanity":
                    call("on_sanity_check_start")
                call.module_hook(n.model_eval)
                call(f"on_{n.prefix}_start")
                call(f"on_{n.prefix}_epoch_start")
                for i, loader in enumerate(loaders):
                    sink.dataloader_idx = i if len(loaders) > 1 else None
                    self._run_loader(loader, i, len(loaders) > 1, limit[i] if isinstance(limit, list) else limit,
                                     outputs[i] if return_predictions else None)
                sink.dataloader_idx = sink.batch = None
                views = self._end(results)
                self._restore_modes(modes)
                if self.stage == "sanity":
                    call("on_sanity_check_end")
        finally:
            call.stage = outer_stage
        if self.stage == "predict":
            return (outputs[0] if len(loaders) == 1 else outputs) if return_predictions else []
        return _per_loader(views.returned, len(loaders))

    def _run_loader(self, loader, i: int, several: bool, limit, outputs: list | None) -> None:
        extra = (i,) if several else ()
        n_batches = limit_batches(limit, length(loader))
        bar = None
        if self.bar is not None:
            bar = self.bar.start_eval(BAR_TITLES[self.stage], i, None if math.isinf(n_batches) else int(n_batches))
        try:
            self._batches(loader, i, extra, n_batches, outputs, bar)
        finally:
            if bar is not None:
                bar.close()

    def _batches(self, loader, i: int, extra: tuple, n_batches, outputs: list | None, bar) -> None:
        call, n, sink = self.hooks, self.names, self.sink
        for batch_idx, batch in enumerate(loader):
            if batch_idx >= n_batches:
                break
            batch = sink.batch = call.transfer(batch, self.device, i)
            call(f"on_{n.prefix}_batch_start", batch, batch_idx, *extra)
            with self.precision.autocast():
                out = call.module_hook(n.step, batch, *((batch_idx,) if self.with_batch_idx else ()), *extra)
            if self.stage in ("validate", "sanity"):
                for k, v in compat.validation_outputs(out).items():  # the seed's dict-returning validation_step
                    sink(k, v, on_step=False, on_epoch=True)
            if outputs is not None:
                outputs.append(out)
            step_views = sink.results.take_step()
            if step_views.log:
                self._publish(step_views)
            call(f"on_{n.prefix}_batch_end", out, batch, batch_idx, *extra)
            if bar is not None:
                bar.update()

    def _end(self, results: Results):
        call, n = self.hooks, self.names
        self.hub.live = results  # callbacks see what on_*_epoch_end logs while the hooks run
        try:
            call(f"on_{n.prefix}_epoch_end")
        finally:
            self.hub.live = None
        views = results.epoch()
        self._publish(views)
        call(f"on_{n.prefix}_end")
        return views

    def _publish(self, views) -> None:
        """The values to the Trainer's dicts and the logger. The sanity check's reach the dicts only (as in
        Lightning, callbacks see them until training starts); the logger never gets them."""
        if self.stage == "sanity":
            self.hub.callback.update(views.callback)
            self.hub.logged.update(views.log)
            return
        step, epoch = self.step()
        self.hub.publish(views, to_logger=True, step=step, epoch=epoch)

    def _restore_modes(self, modes: list) -> None:
        train_hook = self.names.model_train
        if train_hook is not None and _defined_outside_ember(self.module, train_hook):
            self.hooks.module_hook(train_hook)
            return
        for m, training in modes:
            m.training = training


def inference_mode_allowed(module: torch.nn.Module, inference_mode: bool) -> bool:
    """Whether an evaluation asked to run under ``torch.inference_mode`` may (else ``torch.no_grad``),
    as Lightning decides: not for a module sharded by FSDP, whose gathered parameters live in buffers
    FSDP allocates at its first forward and reuses in training (made under inference mode they are
    inference tensors, which training may not update in place: pytorch#95957), nor on a gloo group."""
    if not inference_mode:
        return False
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        return False
    fsdp = sys.modules.get("torch.distributed.fsdp")  # not imported: nothing is sharded
    return fsdp is None or not any(isinstance(m, fsdp.FSDPModule) for m in module.modules())


def _defined_outside_ember(module, hook: str) -> bool:
    return getattr(type(module), hook) is not getattr(ModelHooks, hook) or hook in vars(module)


def _per_loader(metrics: dict[str, Any], n: int) -> list[dict[str, float]]:
    """Lightning's return value: one dict per loader, each with that loader's metrics and the shared ones."""
    out: list[dict[str, float]] = [{} for _ in range(n)]
    for k, v in metrics.items():
        name, sep, idx = k.rpartition("/dataloader_idx_")
        for i, d in enumerate(out):
            if not sep or (idx.isdigit() and int(idx) == i):
                d[k] = as_float(v)
    return out


def print_results(title: str, results: list[dict[str, float]]) -> None:
    """A small table of the metrics, one column per loader (``verbose=True``)."""
    names = sorted({k for d in results for k in d})
    if not names:
        return
    width = max(len(k) for k in names + [f"{title} metric"]) + 2
    print(f"{title + ' metric':<{width}}" + "".join(f"DataLoader {i:<8}" for i in range(len(results))))
    for k in names:
        print(f"{k:<{width}}" + "".join(f"{d[k]:<19.6g}" if k in d else " " * 19 for d in results))
    sys.stdout.flush()
