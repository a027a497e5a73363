"""LearningRateMonitor: log each optimizer's learning rate (and momentum) to the Trainer's loggers,
under Lightning's names: ``lr-Adam``, ``lr-Adam-1`` for a second Adam, ``lr-SGD/pg2`` for a second
parameter group, ``lr-SGD-momentum`` for momentum."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ember.core.callback import Callback
from ember.errors import MisconfigurationError

_INTERVALS = (None, "step", "epoch")


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
        self.lrs: dict[str, list[float]] = {}
        self.last_momentum_values: dict[str, float | None] = {}
        self.last_weight_decay_values: dict[str, float | None] = {}
        self._last_step: int | None = None

    def on_train_start(self, trainer, module) -> None:
        self._last_step = None
        if not trainer.loggers:
            raise MisconfigurationError(
                "LearningRateMonitor needs a logger, and this Trainer has none (logger=False); pass "
                "logger=True or a logger such as CSVLogger(...), or remove the callback.")
        for names in self._named(trainer).values():
            for name in names:
                self.lrs.setdefault(name, [])
                if self.log_momentum:
                    self.last_momentum_values.setdefault(f"{name}-momentum", None)
                if self.log_weight_decay:
                    self.last_weight_decay_values.setdefault(f"{name}-weight_decay", None)

    def _named(self, trainer) -> dict[int, list[str]]:
        """``id(optimizer) -> [name of each parameter group]``, as Lightning names them: optimizers driven by a
        scheduler first (the scheduler's ``name`` if it has one, else ``lr-<Optimizer>``), then the others;
        ``-1``, ``-2`` for later optimizers of one class; ``/pg2`` (or the group's ``"name"``) per group."""
        out: dict[int, list[str]] = {}
        count: dict[type, int] = defaultdict(int)
        pairs = [(c.scheduler.optimizer, getattr(c, "name", None)) for c in trainer.lr_scheduler_configs
                 if getattr(c.scheduler, "optimizer", None) is not None]
        pairs += [(o, None) for o in trainer.optimizers if id(o) not in {id(p) for p, _ in pairs}]
        for opt, given in pairs:
            if id(opt) in out:
                continue
            base = given
            if given is None:
                count[type(opt)] += 1
                n = count[type(opt)]
                base = f"lr-{type(opt).__name__}" + (f"-{n - 1}" if n > 1 else "")
            out[id(opt)] = _group_names(base, opt.param_groups)
        return out

    def names(self, trainer) -> list[list[str]]:
        """Per optimizer of ``trainer.optimizers``, the name of each parameter group's learning rate.

        Args:
            trainer: the Trainer whose optimizers are named.
        """
        named = self._named(trainer)
        return [named[id(o)] for o in trainer.optimizers if id(o) in named]

    def stats(self, trainer, interval: str) -> dict[str, float]:
        """The values to log at ``interval`` (``"step"`` or ``"epoch"``).

        Args:
            trainer: the Trainer whose optimizers are read.
            interval: "step" or "epoch"; only optimizers logged at that interval are included.
        """
        scheduled = {id(c.scheduler.optimizer): c.interval for c in trainer.lr_scheduler_configs
                     if getattr(c.scheduler, "optimizer", None) is not None}
        by_id = {id(o): o for o in trainer.optimizers}
        by_id.update({id(c.scheduler.optimizer): c.scheduler.optimizer for c in trainer.lr_scheduler_configs
                      if getattr(c.scheduler, "optimizer", None) is not None})
        out: dict[str, float] = {}
        for key, names in self._named(trainer).items():
            opt = by_id[key]
            wanted = self.logging_interval or scheduled.get(key, "step")
            if wanted != interval and not (self.logging_interval is None and key not in scheduled):
                continue
            use_betas = "betas" in opt.defaults
            for name, group in zip(names, opt.param_groups):
                out[name] = float(group["lr"])
                if self.log_momentum:
                    momentum = group["betas"][0] if use_betas else group.get("momentum", 0)
                    out[f"{name}-momentum"] = self.last_momentum_values[f"{name}-momentum"] = float(momentum)
                if self.log_weight_decay:
                    decay = group.get("weight_decay", 0)
                    out[f"{name}-weight_decay"] = self.last_weight_decay_values[f"{name}-weight_decay"] = float(decay)
        return out

    def _log(self, trainer, interval: str) -> None:
        values = self.stats(trainer, interval)
        if not values:
            return
        for k, v in values.items():
            if not k.endswith(("-momentum", "-weight_decay")):
                self.lrs.setdefault(k, []).append(v)
        trainer._hub.callback.update(values)  # Lightning puts them in callback_metrics too
        step = _batches_stepped(trainer)
        for lg in trainer.loggers:
            lg.log_metrics(values, step=step)

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        every = _setting(trainer, "log_every_n_steps", 1) or 1
        step = _batches_stepped(trainer)
        if (step + 1) % every == 0 and step != self._last_step:  # Lightning's count; once per optimizer step
            self._last_step = step
            self._log(trainer, "step")

    def on_train_epoch_start(self, trainer, module) -> None:
        self._log(trainer, "epoch")


def _batches_stepped(trainer) -> int:
    """Lightning's logging step: batches that ended in an optimizer step so far."""
    loop = getattr(trainer, "fit_loop", None)
    return loop.progress.batches_stepped if loop is not None else trainer.global_step


def _group_names(base: str, groups: list[dict]) -> list[str]:
    """One name per parameter group: the group's ``"name"`` or ``pg<i>`` after a ``/`` when there are several."""
    names = [g.get("name") for g in groups]
    given = [n for n in names if n is not None]
    if len(given) != len(set(given)):
        raise MisconfigurationError(f"an optimizer has parameter groups with the same 'name' ({given}); "
                                    f"LearningRateMonitor logs each under its name ({base}/<name>): make them unique.")
    if len(groups) == 1:
        return [f"{base}/{names[0]}" if names[0] else base]
    return [f"{base}/{n if n else f'pg{i + 1}'}" for i, n in enumerate(names)]
