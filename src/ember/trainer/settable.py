"""The Trainer's fit settings as attributes (Lightning's plain attributes): read, and set by programs and callbacks
(``trainer.limit_val_batches = 0``, ``trainer.check_val_every_n_epoch = 2``) with the effect setting them has in
Lightning. A value set before ``fit`` is used as if it had been passed to ``Trainer(...)``; during fit:

- ``limit_val_batches``: 0 turns validation off from then on, a non-zero value turns it back on; fit's validations
  keep the number of batches of its first one (the sanity check counts), as Lightning fixes it then, until the
  loaders are reloaded (``reload_dataloaders_every_n_epochs``).
- ``limit_train_batches`` and ``val_check_interval``: read when fit sets up its data (after the sanity check) and
  when the loaders are reloaded, so a change mid-fit waits for a reload, as in Lightning.
- ``check_val_every_n_epoch``: from the next epoch's start (a callback's ``on_train_epoch_start`` included).
- ``val_check_batch``: at once (Lightning's loop reads it after every batch); fit's set-up and reloads set it.
- ``limit_test_batches``, ``limit_predict_batches``: at the next ``test``/``predict``.

Each value is checked as ``Trainer(...)`` checks it (``FitSettings``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ember.loops.settings import FitSettings


def changed(settings: FitSettings, **changes: Any) -> FitSettings:
    """``settings`` with ``changes`` (checked as at ``Trainer(...)``); whether max_epochs was defaulted is kept."""
    new = replace(settings, **changes)
    object.__setattr__(new, "epochs_defaulted", settings.epochs_defaulted)
    return new


def _setting(name: str, doc: str) -> property:
    """A Trainer attribute that is the fit setting ``name``; setting it changes the Trainer's settings and those of
    the fit loop (which reads them as described in this module)."""

    def get(self) -> Any:
        return getattr(self.settings, name)

    def set_(self, value: Any) -> None:
        self.settings = changed(self.settings, **{name: value})
        loop = getattr(self, "fit_loop", None)
        if loop is not None:
            loop.settings = changed(loop.settings, **{name: value})

    return property(get, set_, doc=doc)


class TrainerSettings:
    """Mixed into Trainer: the fit settings as attributes, those Lightning lets programs set settable."""

    settings: FitSettings

    @property
    def max_epochs(self) -> int | None:
        return self.settings.max_epochs

    @max_epochs.setter
    def max_epochs(self, value: int | None) -> None:
        self.settings = replace(self.settings, max_epochs=value)

    @property
    def max_steps(self) -> int | None:
        return self.settings.max_steps

    @max_steps.setter
    def max_steps(self, value: int | None) -> None:
        self.settings = replace(self.settings, max_steps=value)

    @property
    def accumulate_grad_batches(self) -> int:
        """Batches per optimizer step now (GradientAccumulationScheduler changes it each epoch)."""
        loop = getattr(self, "fit_loop", None)
        return loop.accumulate_grad_batches if loop is not None else self.settings.accumulate_grad_batches

    @accumulate_grad_batches.setter
    def accumulate_grad_batches(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"accumulate_grad_batches must be an int >= 1; received {value!r}.")
        if getattr(self, "fit_loop", None) is not None:
            self.fit_loop.accumulate_grad_batches = value
        else:
            self.settings = replace(self.settings, accumulate_grad_batches=value)

    @property
    def min_epochs(self) -> int | None:
        return self.settings.min_epochs

    @property
    def min_steps(self) -> int | None:
        return self.settings.min_steps

    @property
    def num_sanity_val_steps(self) -> int:
        return self.settings.num_sanity_val_steps

    @property
    def log_every_n_steps(self) -> int:
        return self.settings.log_every_n_steps

    limit_train_batches = _setting("limit_train_batches", "Batches per training epoch: an int, or a fraction.")
    limit_val_batches = _setting("limit_val_batches", "Batches per validation loader: an int, or a fraction.")
    limit_test_batches = _setting("limit_test_batches", "Batches per test loader: an int, or a fraction.")
    limit_predict_batches = _setting("limit_predict_batches", "Batches per predict loader: an int, or a fraction.")
    check_val_every_n_epoch = _setting("check_val_every_n_epoch", "Validate every n-th epoch (None: by batch count).")
    val_check_interval = _setting("val_check_interval", "An int, a fraction (None: 1.0) or a time interval as given.")

    @property
    def val_check_batch(self) -> int | float | None:
        """Validation follows every this many training batches (inf: the end of an epoch of unknown length; None:
        time-based, or before fit starts training), as Lightning sets it at fit start; settable (at once)."""
        loop = getattr(self, "fit_loop", None)
        return loop.val_schedule.batch if loop is not None else self.__dict__.get("_val_check_batch")

    @val_check_batch.setter
    def val_check_batch(self, value: int | float | None) -> None:
        loop = getattr(self, "fit_loop", None)
        if loop is not None:
            loop.val_schedule.batch = value
        else:
            self.__dict__["_val_check_batch"] = value  # read back until fit sets it up, as in Lightning
