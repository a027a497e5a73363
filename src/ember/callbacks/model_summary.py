"""ModelSummary: print the model's layers and parameter counts when fit starts."""

from __future__ import annotations

from ember.core.callback import Callback
from ember.utilities.model_summary import ModelSummary as _Summary, check_max_depth


class ModelSummary(Callback):
    """Print the summary table of the model (``max_depth`` levels of layers) at fit start, on the
    global-zero process; ``summarize(module)`` returns it.

    Args:
        max_depth: how many levels of nested layers the table shows (0 prints nothing; -1 every level).
    """

    def __init__(self, max_depth: int = 1) -> None:
        check_max_depth(max_depth)
        self._max_depth = max_depth

    def summarize(self, module) -> _Summary:
        """The summary of ``module`` to ``max_depth`` levels (printing it gives the table).

        Args:
            module: the LightningModule (or any ``nn.Module``) to summarize.
        """
        return _Summary(module, max_depth=self._max_depth)

    def on_fit_start(self, trainer, module) -> None:
        if self._max_depth == 0 or not getattr(trainer, "is_global_zero", True):
            return
        print(self.summarize(module), flush=True)

