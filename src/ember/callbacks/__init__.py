"""Callbacks: hooks into fit, each with optional checkpointed state (Lightning's names)."""

from ember.callbacks.base import Callback
from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.lr_monitor import LearningRateMonitor
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.model_summary import ModelSummary
from ember.callbacks.on_exception import OnExceptionCheckpoint
from ember.callbacks.progress.tqdm_progress import ProgressBarCallback, TQDMProgressBar

__all__ = ["Callback", "EarlyStopping", "LearningRateMonitor", "ModelCheckpoint", "ModelSummary",
           "OnExceptionCheckpoint", "ProgressBarCallback", "TQDMProgressBar"]
