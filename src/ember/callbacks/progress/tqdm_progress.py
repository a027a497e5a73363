"""TQDMProgressBar: the training progress bar as a callback (Lightning's class). Given in
``callbacks``, it replaces the Trainer's built-in bar; subclass it to change what is shown
(``get_metrics``) or how often it redraws (``refresh_rate``)."""

from __future__ import annotations

import functools
import sys
from typing import Any

from tqdm.auto import tqdm

from ember.core.callback import Callback


class ProgressBarCallback(Callback):
    """The base of progress bar callbacks: a Trainer given one shows no bar of its own. Subclasses set
    ``_refresh_rate`` (batches per redraw, 0: off) and ``_enabled``."""

    _refresh_rate, _enabled = 1, True

    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self._refresh_rate > 0

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def disable(self) -> None:
        """Hide the bar until ``enable`` is called."""
        self._enabled = False

    def enable(self) -> None:
        """Show the bar again after ``disable``."""
        self._enabled = True

    _trainer = None

    @property
    def trainer(self):
        """The Trainer the bar reports on (set in ``setup``); TypeError before, as Lightning's."""
        if self._trainer is None:
            raise TypeError(f"The `{type(self).__name__}._trainer` reference has not been set yet.")
        return self._trainer

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Keep the Trainer as ``self.trainer`` (a subclass overriding ``setup`` calls this one, as in Lightning).

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule it runs.
            stage: "fit", "validate", "test" or "predict".
        """
        self._trainer = trainer

    @property
    def total_train_batches(self) -> int | float:
        """Training batches this epoch (inf: a loader without a length); with ``max_epochs=-1`` and ``max_steps``,
        at most the steps left."""
        t = self.trainer
        if t.max_epochs == -1 and t.max_steps is not None and t.max_steps > 0:
            return min(t.num_training_batches, t.max_steps - t.global_step)
        return t.num_training_batches

    @property
    def total_val_batches(self) -> int | float:
        """Validation batches of all loaders that this epoch runs: 0 in an epoch that does not validate
        (``check_val_every_n_epoch``) or without validation."""
        t = self.trainer
        loop = getattr(t, "fit_loop", None)
        if loop is None or not t.enable_validation or not loop.val_schedule.epoch_validates(t.current_epoch):
            return 0
        return sum(t.num_val_batches)

    def get_metrics(self, trainer, module) -> dict[str, Any]:
        """What the bar shows after the epoch and step: the loss and the metrics logged with prog_bar=True.

        Args:
            trainer: the Trainer running.
            module: the LightningModule being trained.
        """
        out: dict[str, Any] = {}
        loop = getattr(trainer, "fit_loop", None)
        loss = getattr(loop, "last_loss", None)
        if loss is not None:
            out["loss"] = f"{float(loss):.4g}"
        shown = getattr(trainer, "progress_bar_metrics", None)
        if shown is None:
            names = getattr(getattr(loop, "train_metrics", None), "prog_bar", set())
            shown = {k: v for k, v in trainer.callback_metrics.items() if k in names}
        for k, v in shown.items():
            out[k] = f"{float(v):.4g}"
        return out


def batches_per_epoch(trainer) -> int | None:
    """``trainer.num_training_batches`` where the Trainer has it, else the loader's length (None: unknown)."""
    total = getattr(trainer, "num_training_batches", None)
    if total is None:
        parts = getattr(getattr(trainer, "fit_loop", None), "parts", None)
        loader = getattr(getattr(parts, "train_data", None), "loader", None)
        try:
            total = len(loader) if loader is not None else None
        except TypeError:  # an iterable without a length
            total = None
    return total if isinstance(total, int) and total >= 0 else None


def replaces_default_bar(callbacks: list[Callback]) -> bool:
    return any(isinstance(cb, ProgressBarCallback) for cb in callbacks)


class TQDMProgressBar(ProgressBarCallback):
    """A tqdm bar per training epoch, redrawn every ``refresh_rate`` batches (0 turns it off), on the
    global-zero process only. ``leave=True`` keeps each epoch's finished bar on screen.

    Args:
        refresh_rate: redraw every this many batches; 0 turns the bar off, below 0 raises ``ValueError``.
        process_position: the bar's line offset, for several bars in one terminal (line ``2 * position``).
        leave: keep each epoch's finished bar.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        if refresh_rate < 0:
            raise ValueError(f"refresh_rate must be >= 0 (0 turns the bar off); received {refresh_rate}")
        self._refresh_rate = refresh_rate
        self._position = process_position
        self._leave = leave
        self._enabled = True
        self.train_progress_bar = None

    def init_train_tqdm(self, total: int | None, initial: int = 0):
        """A new tqdm bar for a training epoch, written to standard error.

        Args:
            total: the number of batches of the epoch, or None when unknown.
            initial: the batches already done (resuming mid-epoch).
        """
        return tqdm(total=total, initial=initial, desc="Training", position=2 * self._position,
                    disable=self.is_disabled, leave=self._leave, dynamic_ncols=True, file=sys.stderr,
                    smoothing=0)

    def on_train_epoch_start(self, trainer, module) -> None:
        if not getattr(trainer, "is_global_zero", True) or self.is_disabled:
            return
        self.train_progress_bar = self.init_train_tqdm(batches_per_epoch(trainer))
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is None:
            return
        n = batch_idx + 1
        if n % self._refresh_rate == 0:
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer, module) -> None:
        bar = self.train_progress_bar
        if bar is None:
            return
        bar.set_postfix(self.get_metrics(trainer, module), refresh=False)
        bar.close()
        self.train_progress_bar = None

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        if self.train_progress_bar is not None:
            self.train_progress_bar.close()
            self.train_progress_bar = None


def convert_inf(x: int | float | None) -> int | float | None:
    """None for an infinite count (tqdm shows no total then), else ``x``.

    Args:
        x: a number of batches, possibly ``float("inf")``.
    """
    return None if x is None or (isinstance(x, float) and x == float("inf")) else x


def get_standard_metrics(trainer: Any) -> dict[str, int | str]:
    """What every progress bar shows besides the logged metrics: ``v_num``, the first logger's version
    (nothing when there is no logger or it has no version).

    Args:
        trainer: the Trainer.
    """
    logger = getattr(trainer, "logger", None)
    version = getattr(logger, "version", None) if logger is not None else None
    if version is None:
        return {}
    return {"v_num": version[-4:] if isinstance(version, str) else version}


@functools.lru_cache(maxsize=None)
def _tqdm_class() -> type:
    class Tqdm(tqdm):
        """tqdm whose numbers in the postfix keep four significant digits."""

        @staticmethod
        def format_num(n: int | float | str) -> str:
            """``n`` for the bar: floats with four significant digits, the rest as tqdm shows them.

            Args:
                n: the number.
            """
            if isinstance(n, float) and n == n and abs(n) != float("inf"):
                return f"{n:.4g}"
            return tqdm.format_num(n)

    return Tqdm


def __getattr__(name: str) -> Any:
    # Tqdm on first use: importing tqdm is not needed by programs that show no bar.
    if name == "Tqdm":
        return _tqdm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
