"""LearningRateMonitor: log each optimizer's learning rate (and momentum) to the Trainer's loggers,
under Lightning's names: ``lr-Adam``, ``lr-Adam-1`` for a second Adam, ``lr-SGD/pg2`` for a second
parameter group, ``lr-SGD-momentum`` for momentum."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ember.core.callback import Callback
from ember.errors import MisconfigurationError

_INTERVALS = (None, "step", "epoch")


def _schedule_intervals(trainer) -> dict[int, str]:
    """``id(optimizer) -> "step" | "epoch"`` for the optimizers an LR scheduler drives."""
    configs = getattr(trainer, "lr_scheduler_configs", None)
    if configs is None:
        loop = getattr(trainer, "fit_loop", None)
        configs = getattr(getattr(loop, "parts", None), "schedulers", None) or []
    out: dict[int, str] = {}
    for cfg in configs:
        opt = getattr(getattr(cfg, "scheduler", None), "optimizer", None)
        if opt is not None:
            out[id(opt)] = getattr(cfg, "interval", "epoch")
    return out


def _setting(trainer, name: str, default: Any) -> Any:
    if hasattr(type(trainer), name):
        return getattr(trainer, name)
    return getattr(getattr(trainer, "settings", None), name, default)


class LearningRateMonitor(Callback):
    """``logging_interval``: ``"step"`` or ``"epoch"`` logs every optimizer then; ``None`` logs each at
    its scheduler's interval (optimizers without a scheduler at every logged step).
    ``log_momentum`` adds ``momentum`` (or Adam's ``betas[0]``); ``log_weight_decay`` adds it.
    Values logged so far are in ``self.lrs`` (``{name: [value, ...]}``).

    Args:
        logging_interval: "step", "epoch" or None, as above; another raises ``MisconfigurationError``.
        log_momentum: also log each group's momentum (or Adam's ``betas[0]``).
        log_weight_decay: also log each group's weight decay.
    """

    def __init__(self, logging_interval: str | None = None, log_momentum: bool = False,
                 log_weight_decay: bool = False) -> None:
        if logging_interval not in _INTERVALS:
            raise MisconfigurationError(
                f"LearningRateMonitor logging_interval must be None, 'step' or 'epoch'; received {logging_interval!r}.")
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = defaultdict(list)
        self._last_step: int | None = None

    def on_train_start(self, trainer, module) -> None:
        self._last_step = None
        if not trainer.loggers:
            raise MisconfigurationError(
                "LearningRateMonitor needs a logger, and this Trainer has none (logger=False); pass "
                "logger=True or a logger such as CSVLogger(...), or remove the callback.")

    def names(self, trainer) -> list[list[str]]:
        """Per optimizer, the name of each parameter group's learning rate.

        Args:
            trainer: the Trainer whose optimizers are named.
        """
        seen: dict[str, int] = defaultdict(int)
        out = []
        for opt in trainer.optimizers:
            base = f"lr-{type(opt).__name__}"
            n = seen[base]
            seen[base] += 1
            name = base if n == 0 else f"{base}-{n}"
            groups = opt.param_groups
            out.append([name] if len(groups) == 1 else [f"{name}/pg{i + 1}" for i in range(len(groups))])
        return out

    def stats(self, trainer, interval: str) -> dict[str, float]:
        """The values to log at ``interval`` (``"step"`` or ``"epoch"``).

        Args:
            trainer: the Trainer whose optimizers are read.
            interval: "step" or "epoch"; only optimizers logged at that interval are included.
        """
        scheduled = _schedule_intervals(trainer)
        out: dict[str, float] = {}
        for opt, names in zip(trainer.optimizers, self.names(trainer)):
            wanted = self.logging_interval or scheduled.get(id(opt), "step")
            if wanted != interval:
                continue
            for name, group in zip(names, opt.param_groups):
                out[name] = float(group["lr"])
                if self.log_momentum:
                    momentum = group.get("momentum", group.get("betas", (0.0,))[0])
                    out[f"{name}-momentum"] = float(momentum)
                if self.log_weight_decay and "weight_decay" in group:
                    out[f"{name}-weight_decay"] = float(group["weight_decay"])
        return out

    def _log(self, trainer, interval: str) -> None:
        values = self.stats(trainer, interval)
        if not values:
            return
        for k, v in values.items():
            self.lrs[k].append(v)
        for lg in trainer.loggers:
            lg.log_metrics(values, step=trainer.global_step)

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        every = _setting(trainer, "log_every_n_steps", 1) or 1
        step = trainer.global_step
        if step % every == 0 and step != self._last_step:  # once per optimizer step, not per accumulated batch
            self._last_step = step
            self._log(trainer, "step")

    def on_train_epoch_start(self, trainer, module) -> None:
        self._log(trainer, "epoch")
