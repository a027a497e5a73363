"""Lightning's module path for the progress-bar base class and the metrics every bar shows."""

from ember.callbacks.progress.tqdm_progress import ProgressBarCallback as ProgressBar
from ember.callbacks.progress.tqdm_progress import get_standard_metrics

__all__ = ["ProgressBar", "get_standard_metrics"]
