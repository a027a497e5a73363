"""RichModelSummary: the model summary at fit start as a ``rich`` table (Lightning's callback; needs rich)."""

from __future__ import annotations

import importlib.util
from typing import Any

from ember.callbacks.model_summary import ModelSummary
from ember.utilities.model_summary import human_count


def require_rich(what: str) -> None:
    if importlib.util.find_spec("rich") is None:
        raise ImportError(f"{what} draws with the `rich` package, which is not installed: pip install rich")


class RichModelSummary(ModelSummary):
    """As ``ModelSummary`` (``max_depth`` levels of layers), drawn as a rich table on the global-zero
    process. ``summarize_kwargs`` are accepted for Lightning's signature and not used.

    Args:
        max_depth: how many levels of nested layers the table shows (0 prints nothing).
        **summarize_kwargs: accepted for Lightning's signature; not used.

    Raises ``ImportError`` when ``rich`` is not installed.
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        require_rich("RichModelSummary")
        super().__init__(max_depth=max_depth)
        self._summarize_kwargs = summarize_kwargs

    def on_fit_start(self, trainer, module) -> None:
        if self._max_depth == 0 or not getattr(trainer, "is_global_zero", True):
            return
        from rich.console import Console  # deferred: optional dependency (rich)
        from rich.table import Table  # deferred: optional dependency (rich)

        summary = self.summarize(module)
        table = Table(header_style="bold magenta")
        for column in ("", "Name", "Type", "Params", "Mode"):
            table.add_column(column, justify="right" if column == "Params" else "left")
        for row in summary.rows():
            table.add_row(*row)
        console = Console()
        console.print(table)
        total, trainable = summary.total_parameters, summary.trainable_parameters
        console.print(f"[bold]Trainable params[/]: {human_count(trainable)}\n"
                      f"[bold]Non-trainable params[/]: {human_count(total - trainable)}\n"
                      f"[bold]Total params[/]: {human_count(total)}\n"
                      f"[bold]Total estimated model params size (MB)[/]: {summary.model_size:.3f}")
