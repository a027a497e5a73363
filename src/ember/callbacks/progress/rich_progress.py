"""RichProgressBar: the training progress as a ``rich`` bar (Lightning's callback; needs rich).
Lightning's path for it is ``callbacks.progress.rich_progress``."""

from __future__ import annotations

from ember.not_supported import placeholder

from dataclasses import dataclass
from typing import Any

from ember.callbacks.progress.tqdm_progress import ProgressBarCallback, batches_per_epoch
from ember.callbacks.rich_model_summary import require_rich


@dataclass
class RichProgressBarTheme:
    """Styles of the bar's parts (rich style strings), Lightning's fields and defaults."""

    description: str = ""
    progress_bar: str = "#6206E0"
    progress_bar_finished: str = "#6206E0"
    progress_bar_pulse: str = "#6206E0"
    batch_progress: str = ""
    time: str = "dim"
    processing_speed: str = "dim underline"
    metrics: str = "italic"
    metrics_text_delimiter: str = " "
    metrics_format: str = ".3f"


class RichProgressBar(ProgressBarCallback):
    """One rich bar per training epoch, redrawn every ``refresh_rate`` batches (0 turns it off), with
    the loss and the ``prog_bar`` metrics; ``leave=True`` keeps each finished epoch's bar;
    ``console_kwargs`` go to ``rich.console.Console``. Given in ``callbacks``, it replaces the
    Trainer's own bar.

    Args:
        refresh_rate: redraw every this many batches (default 100); 0 turns the bar off, below 0 raises
            ``ValueError``.
        leave: keep each epoch's finished bar.
        theme: the styles of the bar's parts (``RichProgressBarTheme``).
        console_kwargs: keyword arguments of ``rich.console.Console``.

    Raises ``ImportError`` when ``rich`` is not installed.
    """

    def __init__(self, refresh_rate: int = 100, leave: bool = False,
                 theme: RichProgressBarTheme = RichProgressBarTheme(),
                 console_kwargs: dict[str, Any] | None = None) -> None:
        require_rich("RichProgressBar")
        if refresh_rate < 0:
            raise ValueError(f"refresh_rate must be >= 0 (0 turns the bar off); received {refresh_rate}")
        self._refresh_rate, self._leave, self.theme = refresh_rate, leave, theme
        self._console_kwargs = console_kwargs or {}
        self._enabled = True
        self.progress = None
        self.train_progress_bar_id = None

    def _metrics_text(self, trainer, module) -> str:
        t = self.theme
        return t.metrics_text_delimiter.join(f"{k}: {v}" for k, v in self.get_metrics(trainer, module).items())

    def on_train_epoch_start(self, trainer, module) -> None:
        if not getattr(trainer, "is_global_zero", True) or self.is_disabled:
            return
        # deferred: optional dependency (rich)
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        t = self.theme
        if self.progress is None:
            self.progress = Progress(TextColumn("[progress.description]{task.description}", style=t.description),
                                     BarColumn(complete_style=t.progress_bar, finished_style=t.progress_bar_finished,
                                               pulse_style=t.progress_bar_pulse),
                                     TextColumn("{task.completed}/{task.total}", style=t.batch_progress),
                                     TimeElapsedColumn(), TextColumn("{task.fields[metrics]}", style=t.metrics),
                                     console=Console(**self._console_kwargs), auto_refresh=False)
            self.progress.start()
        self.train_progress_bar_id = self.progress.add_task(f"Epoch {trainer.current_epoch}",
                                                            total=batches_per_epoch(trainer), metrics="")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if self.progress is None or self.train_progress_bar_id is None:
            return
        if (batch_idx + 1) % self._refresh_rate == 0:
            self.progress.update(self.train_progress_bar_id, completed=batch_idx + 1,
                                 metrics=self._metrics_text(trainer, module))
            self.progress.refresh()

    def on_train_epoch_end(self, trainer, module) -> None:
        if self.progress is None or self.train_progress_bar_id is None:
            return
        done = trainer.fit_loop.progress.batch if getattr(trainer, "fit_loop", None) is not None else None
        self.progress.update(self.train_progress_bar_id, metrics=self._metrics_text(trainer, module),
                             visible=self._leave, **({"completed": done} if done is not None else {}))
        self.progress.refresh()
        self.train_progress_bar_id = None

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.train_progress_bar_id = None

    def on_train_end(self, trainer, module) -> None:
        self._stop()

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        self._stop()


# Lightning's helper classes of this module, not rebuilt (ember.not_supported says why and what to use)
BatchesProcessedColumn = placeholder("callbacks.progress.rich_progress.BatchesProcessedColumn")
CustomBarColumn = placeholder("callbacks.progress.rich_progress.CustomBarColumn")
CustomInfiniteTask = placeholder("callbacks.progress.rich_progress.CustomInfiniteTask")
CustomProgress = placeholder("callbacks.progress.rich_progress.CustomProgress")
CustomTimeColumn = placeholder("callbacks.progress.rich_progress.CustomTimeColumn")
MetricsTextColumn = placeholder("callbacks.progress.rich_progress.MetricsTextColumn")
ProcessingSpeedColumn = placeholder("callbacks.progress.rich_progress.ProcessingSpeedColumn")
