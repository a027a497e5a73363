"""Progress bars: the bar fit draws (``bar.FitBar``) and the callbacks that own it (``TQDMProgressBar``)."""

from ember.callbacks.progress.tqdm_progress import ProgressBarCallback, TQDMProgressBar

ProgressBar = ProgressBarCallback  # Lightning's name for the base class of progress bar callbacks

__all__ = ["ProgressBar", "ProgressBarCallback", "TQDMProgressBar"]
