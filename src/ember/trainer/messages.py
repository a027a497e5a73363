"""What the Trainer tells the user on the ``ember`` logger (Lightning's ``rank_zero_info`` messages, same texts) and
its warnings at fit start."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ember.utilities.model_summary import ModelSummary
from ember.loops.data import length
from ember.utilities.rank_zero import rank_zero_info, rank_zero_warn

_ONE = {"limit_train_batches": ("1 batch per epoch will be used.", "100% of the batches per epoch will be used."),
        "val_check_interval": ("validation will run after every batch.",
                               "validation will run at the end of the training epoch.")}
_ONE_DEFAULT = ("1 batch will be used.", "100% of the batches will be used.")


def _what_one_means(name: str, value: Any) -> None:
    """Lightning's note on a batch limit given as exactly ``1`` or ``1.0``, which read alike but mean one batch and
    every batch (its texts, the doubled full stop of the ``1.0`` form included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != 1:
        return
    one, whole = _ONE.get(name, _ONE_DEFAULT)
    if isinstance(value, int):
        rank_zero_info(f"`Trainer({name}=1)` was configured so {one}")
    else:
        rank_zero_info(f"`Trainer({name}=1.0)` was configured so {whole}.")


def announce_limits(fast_dev_run: int, overfit_batches: Any, limits: dict[str, Any], val_check_interval: Any) -> None:
    """At ``Trainer(...)``, Lightning's info messages about the batch limits the program passed, in its order:
    ``overfit_batches``; then the ``fast_dev_run`` note, or each of ``limits`` (``limit_*_batches`` by name; train
    and val are replaced by ``overfit_batches`` when it is set) and a batch-count ``val_check_interval``."""
    _what_one_means("overfit_batches", overfit_batches)
    if fast_dev_run:
        rank_zero_info(f"Running in `fast_dev_run` mode: will run the requested loop using {fast_dev_run} batch(es). "
                       "Logging and checkpointing is suppressed.")
        return
    for name, value in limits.items():
        if not (overfit_batches and name in ("limit_train_batches", "limit_val_batches")):
            _what_one_means(name, value)
    _what_one_means("val_check_interval", val_check_interval)


def log_summary(module: torch.nn.Module) -> None:
    """The model summary table at fit start (Lightning prints it by default; enable_model_summary=False
    turns it off)."""
    rank_zero_info("\n%s", ModelSummary(module, max_depth=1))


def log_stop(trainer: Any) -> None:
    """Lightning's closing line of fit: which limit ended it."""
    s, p = trainer.settings, trainer.fit_loop.progress
    if s.max_steps is not None and 0 <= s.max_steps <= p.global_step:
        reason = f"`max_steps={s.max_steps}` reached"
    elif trainer.should_stop:
        reason = "`trainer.should_stop` was set"
    elif s.max_epochs is not None and 0 <= s.max_epochs <= trainer.current_epoch:
        reason = f"`max_epochs={s.max_epochs}` reached"
    else:
        return
    if trainer.is_global_zero:
        rank_zero_info("`Trainer.fit` stopped: %s.", reason)


def no_training(trainer: Any, train: Any) -> None:
    """Lightning's warning for each training loader of no batch, and its info that fit stopped for want of
    batches (neither when ``limit_train_batches=0``: Lightning does not look at the loaders then)."""
    if trainer.settings.limit_train_batches == 0:
        return
    loaders = train.values() if isinstance(train, dict) else train if isinstance(train, (list, tuple)) else [train]
    for loader in loaders:
        if length(loader) == 0:
            rank_zero_warn(f"Total length of `{type(loader).__name__}` across ranks is zero. Please make sure this "
                           "was your intention.")
    if trainer.is_global_zero:
        rank_zero_info("`Trainer.fit` stopped: No training batches.")


def fit_hints(trainer: Any, n_batches: Any) -> None:
    """Lightning's warnings at fit start: max_epochs left unset; fewer batches than the logging interval (none for
    no batch: then fit does not train)."""
    s = trainer.settings
    if s.epochs_defaulted:
        warnings.warn("`max_epochs` was not set. Setting it to 1000 epochs. To train without an epoch limit, set "
                      "`max_epochs=-1`.", stacklevel=4)
    few = isinstance(n_batches, int) and 0 < n_batches < s.log_every_n_steps
    if trainer.loggers and few and not trainer.fast_dev_run:
        warnings.warn(f"The number of training batches ({n_batches}) is smaller than the logging interval "
                      f"Trainer(log_every_n_steps={s.log_every_n_steps}). Set a lower value for log_every_n_steps if "
                      "you want to see logs for the training epoch.", stacklevel=4)
