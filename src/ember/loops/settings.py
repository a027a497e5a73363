"""The settings of a fit: one small frozen dataclass, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from dataclasses import fields
from datetime import timedelta
from typing import Any

import torch

from ember.errors import MisconfigurationError
from ember.loops.valcheck import TIME_FORMS, interval_seconds

_PRECISIONS = {
    "32": "32", 32: "32", "32-true": "32",
    "16-mixed": "16-mixed", "16": "16-mixed", 16: "16-mixed",
    "bf16-mixed": "bf16-mixed", "bf16": "bf16-mixed",
}  # fmt: skip


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bad(name: str, expected: str, value: Any) -> MisconfigurationError:
    return MisconfigurationError(f"{name} must be {expected}; received {value!r}.")


@dataclass(kw_only=True, frozen=True)
class FitSettings:
    """How the loop trains. Built by ``Trainer(...)``; every field is checked in ``__post_init__``."""

    max_epochs: int | None = None
    """Stop after this many epochs (None: no limit; with max_steps also None, 1000)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (None or -1: no limit)."""
    accumulate_grad_batches: int = 1
    """Batches whose gradients are summed before each optimizer step."""
    gradient_clip_val: float | None = None
    """Clip gradients to this norm (or value) before each step; None or 0: no clipping."""
    gradient_clip_algorithm: str = "norm"
    """``"norm"`` (clip_grad_norm_) or ``"value"`` (clip_grad_value_)."""
    limit_train_batches: int | float = 1.0
    """Batches per training epoch: an int count, or a fraction of the loader."""
    limit_val_batches: int | float = 1.0
    """Batches per validation: an int count, or a fraction of the loader."""
    limit_test_batches: int | float = 1.0
    """Batches per test loader in ``trainer.test``."""
    limit_predict_batches: int | float = 1.0
    """Batches per loader in ``trainer.predict``."""
    num_sanity_val_steps: int = 2
    """Validation batches (per loader) run before training to catch bugs early; -1: all, 0: none."""
    min_epochs: int | None = None
    """A stop request (``should_stop``, EarlyStopping) waits until this many epochs are done."""
    min_steps: int | None = None
    """A stop request waits until this many optimizer steps are taken."""
    reload_dataloaders_every_n_epochs: int = 0
    """Ask the module or datamodule for fresh loaders every n epochs (0: never)."""
    inference_mode: bool = True
    """Evaluate under ``torch.inference_mode`` (False: ``torch.no_grad``)."""
    check_val_every_n_epoch: int | None = 1
    """Validate in every n-th epoch (None: by ``val_check_interval`` batches counted across epochs)."""
    val_check_interval: int | float | str | timedelta | dict = 1.0
    """Validate every n batches (int), after a fraction of each epoch (float), or once this much time has passed
    since the last validation (``"DD:HH:MM:SS"``, a ``timedelta`` or a dict of its keywords, kept as given)."""
    val_check_seconds: float | None = field(default=None, init=False)
    """A time-based ``val_check_interval`` in seconds (None: batch-based)."""
    log_every_n_steps: int = 50
    """Send step metrics to the logger every n optimizer steps."""
    precision: str = "32"
    """``"32"``, ``"16-mixed"`` or ``"bf16-mixed"`` (aliases such as 16 and "bf16" are accepted)."""
    epochs_defaulted: bool = field(default=False, init=False)
    """max_epochs and max_steps were both unset: max_epochs became 1000."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for f in fields(self):  # Lightning's signature defaults these to None, meaning "the default"
            if f.name in _NONE_MEANS_DEFAULT and getattr(self, f.name) is None:
                set_(self, f.name, f.default)
        max_steps = None if self.max_steps == -1 else self.max_steps
        max_epochs = self.max_epochs
        set_(self, "epochs_defaulted", max_epochs is None and max_steps is None)  # fit warns, as Lightning
        if max_epochs is None and max_steps is None:
            max_epochs = 1000
        for name, value in (("max_epochs", max_epochs), ("max_steps", max_steps)):
            if value is not None and (not _is_int(value) or value < -1):
                raise _bad(name, "an int >= 0 (or -1 for no limit)", value)
        set_(self, "max_epochs", max_epochs)
        set_(self, "max_steps", max_steps)
        if not _is_int(self.accumulate_grad_batches) or self.accumulate_grad_batches < 1:
            raise _bad("accumulate_grad_batches", "an int >= 1", self.accumulate_grad_batches)
        if self.gradient_clip_algorithm not in ("norm", "value"):
            raise _bad("gradient_clip_algorithm", "'norm' or 'value'", self.gradient_clip_algorithm)
        for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches"):
            v = getattr(self, name)
            if not ((_is_int(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0)):
                raise _bad(name, "an int >= 0 (batches) or a float in [0, 1]", v)
        self._check_val_schedule()
        set_(self, "log_every_n_steps", max(1, int(self.log_every_n_steps)))
        if not _is_int(self.num_sanity_val_steps) or self.num_sanity_val_steps < -1:
            raise _bad("num_sanity_val_steps", "an int >= -1 (-1: every batch, 0: no sanity check)",
                       self.num_sanity_val_steps)
        for name in ("min_epochs", "min_steps"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 0):
                raise _bad(name, "an int >= 0 or None", v)
        if not _is_int(self.reload_dataloaders_every_n_epochs) or self.reload_dataloaders_every_n_epochs < 0:
            raise _bad("reload_dataloaders_every_n_epochs", "an int >= 0", self.reload_dataloaders_every_n_epochs)
        if not isinstance(self.inference_mode, bool):
            raise _bad("inference_mode", "True or False", self.inference_mode)
        if self.precision not in _PRECISIONS:
            raise _bad("precision", "one of '32', '16-mixed', 'bf16-mixed'", self.precision)
        set_(self, "precision", _PRECISIONS[self.precision])

    def _check_val_schedule(self) -> None:
        """check_val_every_n_epoch: None or an int >= 1. val_check_interval: an int >= 1 (a float such as 2.0
        too, as Lightning), a fraction in [0, 1] (0.0: every batch), or a time interval (``val_check_seconds``)."""
        n = self.check_val_every_n_epoch
        if n is not None and (not _is_int(n) or n < 1):
            raise _bad("check_val_every_n_epoch", "an int >= 1, or None to validate by batches across epochs", n)
        v = self.val_check_interval
        if isinstance(v, TIME_FORMS):
            object.__setattr__(self, "val_check_seconds", interval_seconds(v))
            return
        if isinstance(v, float) and v > 1.0 and v.is_integer():
            object.__setattr__(self, "val_check_interval", v := int(v))
        if not ((_is_int(v) and v >= 1) or (isinstance(v, float) and 0.0 <= v <= 1.0)):
            raise _bad("val_check_interval", "an int >= 1 (every n training batches), a float in [0, 1] (a fraction "
                       "of the epoch) or a time interval ('DD:HH:MM:SS', a timedelta or a dict such as "
                       "{'minutes': 5})", v)

    def limits_reached(self, epoch: int, global_step: int) -> bool:
        """Whether training at ``epoch`` having taken ``global_step`` steps must stop."""
        if self.max_steps is not None and self.max_steps >= 0 and global_step >= self.max_steps:
            return True
        return self.max_epochs is not None and self.max_epochs >= 0 and epoch >= self.max_epochs

    def minimum_reached(self, epochs_done: int, global_step: int) -> bool:
        """Whether min_epochs and min_steps allow a stop request to end training."""
        return epochs_done >= (self.min_epochs or 0) and global_step >= (self.min_steps or 0)


_NONE_MEANS_DEFAULT = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                       "val_check_interval", "num_sanity_val_steps", "log_every_n_steps", "precision")


def device_for(accelerator: str) -> torch.device:
    """The device ``accelerator`` names: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``/``"gpu"``."""
    if accelerator in ("auto", "gpu", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if accelerator != "auto":
            raise MisconfigurationError(f"accelerator={accelerator!r} was asked for but CUDA is not available.")
        return torch.device("cpu")
    if accelerator == "cpu":
        return torch.device("cpu")
    raise MisconfigurationError(f"accelerator must be 'auto', 'cpu', 'cuda' or 'gpu'; received {accelerator!r}.")
