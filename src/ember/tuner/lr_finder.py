"""The learning-rate finder: train ``num_training`` steps with the learning rate growing from ``min_lr``
to ``max_lr`` and record the smoothed loss; suggest the rate where the loss falls fastest
(Lightning's ``lr_find``, after Smith, "Cyclical Learning Rates", 2017)."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from ember.core.callback import Callback
from ember.errors import MisconfigurationError
from ember.loops.optim import SchedulerConfig
from ember.tuner.attrs import lightning_getattr, lightning_hasattr, lightning_setattr
from ember.tuner.session import searching

log = logging.getLogger("ember")


class _RangeLR(torch.optim.lr_scheduler.LRScheduler):
    """From each group's base lr to ``end_lr`` over ``num_iter`` steps, linearly or exponentially."""

    def __init__(self, optimizer, end_lr: float, num_iter: int, exponential: bool) -> None:
        self.end_lr, self.num_iter, self.exponential = end_lr, num_iter, exponential
        self._lr: list[float] = []
        super().__init__(optimizer, -1)

    def get_lr(self) -> list[float]:
        if self.last_epoch <= 0:
            val = list(self.base_lrs)
        else:
            r = (self.last_epoch + 1) / self.num_iter  # as Lightning counts (the end is never reached exactly)
            val = [b * (self.end_lr / b) ** r if self.exponential else b + r * (self.end_lr - b) for b in self.base_lrs]
        self._lr = val
        return val

    @property
    def lr(self) -> list[float]:
        return self._lr


class _LRFinder:
    """What ``Tuner.lr_find`` returns: ``results`` ({"lr": [...], "loss": [...]}), ``suggestion()``, ``plot()``."""

    def __init__(self, mode: str, lr_min: float, lr_max: float, num_training: int) -> None:
        if mode not in ("linear", "exponential"):
            raise MisconfigurationError(f"lr_find mode must be 'linear' or 'exponential'; received {mode!r}.")
        self.mode, self.lr_min, self.lr_max, self.num_training = mode, lr_min, lr_max, num_training
        self.results: dict[str, list[float]] = {}
        self._optimal_idx: int | None = None

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The lr where the loss falls fastest (the steepest negative gradient of loss over lr), skipping
        ``skip_begin`` points at the start and ``skip_end`` at the end; None with fewer than 2 points."""
        losses = torch.tensor(self.results["loss"][skip_begin:-skip_end], dtype=torch.float64)
        lrs = torch.tensor(self.results["lr"][skip_begin:-skip_end], dtype=torch.float64)
        finite = torch.isfinite(losses)
        losses, lrs = losses[finite], lrs[finite]
        if len(losses) < 2:
            log.error("lr_find: too few loss points to suggest a learning rate; raise num_training or give more data.")
            self._optimal_idx = None
            return None
        steepest = int(torch.argmin(torch.gradient(losses, spacing=[lrs])[0]))
        kept = torch.arange(len(self.results["loss"]))[skip_begin:-skip_end][finite]
        self._optimal_idx = int(kept[steepest])
        return self.results["lr"][self._optimal_idx]

    def plot(self, suggest: bool = False, show: bool = False, ax: Any = None):
        """Loss against learning rate (a log axis in exponential mode); needs matplotlib."""
        try:
            import matplotlib.pyplot as plt  # deferred: optional dependency (matplotlib)
        except ImportError:
            raise ImportError("lr_finder.plot() needs matplotlib: pip install matplotlib") from None
        lrs, losses = self.results["lr"], self.results["loss"]
        fig = None
        if ax is None:
            fig, ax = plt.subplots()
        ax.plot(lrs, losses)
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        if suggest and self.suggestion() is not None:
            ax.plot(lrs[self._optimal_idx], losses[self._optimal_idx], markersize=10, marker="o", color="red")
        if show:
            plt.show()
        return fig


class _LRCallback(Callback):
    """Records the lr before each step and the smoothed loss after it; stops when the loss diverges."""

    def __init__(self, num_training: int, early_stop_threshold: float | None, beta: float = 0.98) -> None:
        self.num_training, self.early_stop_threshold, self.beta = num_training, early_stop_threshold, beta
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.avg_loss, self.best_loss = 0.0, 1e9

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            self.lrs.append(trainer.fit_loop.parts.schedulers[0].scheduler.lr[0])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches != 0:
            return
        if not outputs:
            self.losses.append(float("nan"))
            return
        loss = float(outputs if isinstance(outputs, torch.Tensor) else outputs["loss"])
        step = trainer.global_step
        self.avg_loss = self.beta * self.avg_loss + (1 - self.beta) * loss
        smoothed = self.avg_loss / (1 - self.beta ** (step + 1))
        if self.early_stop_threshold is not None and step > 1 and smoothed > self.early_stop_threshold * self.best_loss:
            trainer.should_stop = True
        if smoothed < self.best_loss or step == 1:
            self.best_loss = smoothed
        self.losses.append(smoothed)


def lr_attr_name(model, attr_name: str = "") -> str:
    """The attribute holding the learning rate: ``attr_name``, else ``lr``, else ``learning_rate``."""
    if attr_name:
        if not lightning_hasattr(model, attr_name):
            raise AttributeError(f"lr_find(attr_name={attr_name!r}): the model has no attribute or hparam of that "
                                 "name; pass the name of the one configure_optimizers() reads.")
        return attr_name
    for name in ("lr", "learning_rate"):
        if lightning_hasattr(model, name):
            return name
    raise AttributeError("the learning rate finder needs the model's lr: give the model an `lr` or `learning_rate` "
                         "attribute (or hparam) that configure_optimizers() reads, or pass attr_name=...")


def lr_find(trainer, model, min_lr: float = 1e-8, max_lr: float = 1.0, num_training: int = 100,
            mode: str = "exponential", early_stop_threshold: float | None = 4.0, update_attr: bool = True,
            attr_name: str = "") -> _LRFinder | None:
    """Run the search inside a running fit (called from ``on_fit_start``); the run's state is restored
    after it. With ``update_attr`` the model's lr attribute and the optimizers get the suggestion."""
    if trainer.fast_dev_run:
        log.warning("lr_find is skipped under fast_dev_run.")
        return None
    if update_attr:
        attr_name = lr_attr_name(model, attr_name)
    optimizers = trainer.optimizers
    if len(optimizers) != 1:
        raise MisconfigurationError(f"the learning rate finder works with one optimizer; configure_optimizers() "
                                    f"returned {len(optimizers)}.")
    finder = _LRFinder(mode, min_lr, max_lr, num_training)
    recorder = _LRCallback(num_training, early_stop_threshold)
    start = trainer.global_step
    with searching(trainer, [recorder], max_steps=num_training + start, limit_val_batches=num_training) as loop:
        for group in optimizers[0].param_groups:
            group["lr"] = group["initial_lr"] = min_lr
        scheduler = _RangeLR(optimizers[0], max_lr, num_training, exponential=mode == "exponential")
        loop.parts.schedulers[:] = [SchedulerConfig(scheduler, interval="step")]
        loop.run()
        if trainer.global_step != num_training + start:
            log.info("lr_find stopped early after %d steps: the loss diverged.", trainer.global_step - start)
        # rank 0's record on every rank (each saw its own batches): every rank sets the same suggestion
        finder.results = trainer.strategy.broadcast({"lr": recorder.lrs, "loss": recorder.losses})
    if update_attr:
        lr = finder.suggestion()
        if lr is not None and math.isfinite(lr):
            lightning_setattr(model, attr_name, lr)
            for opt in trainer.optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr
            log.info("Learning rate set to %s", lr)
    return finder


__all__ = ["_LRFinder", "lr_find", "lightning_getattr"]
