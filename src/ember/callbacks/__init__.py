"""Callbacks: hooks into fit, each with optional checkpointed state (Lightning's names)."""

from ember.callbacks.base import Callback
from ember.callbacks.checkpoint import Checkpoint
from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.lr_monitor import LearningRateMonitor
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.model_summary import ModelSummary
from ember.callbacks.on_exception import OnExceptionCheckpoint
from ember.callbacks.progress_bar import ProgressBarCallback, TQDMProgressBar
from ember.utilities import not_supported as _not_supported

ProgressBar = ProgressBarCallback  # Lightning's name for the base class of progress bars
globals().update(_not_supported.install("callbacks"))

__all__ = ["Callback", "Checkpoint", "EMAWeightAveraging", "EarlyStopping", "LearningRateMonitor", "ModelCheckpoint",
           "ModelPruning", "ModelSummary", "OnExceptionCheckpoint", "ProgressBar", "ProgressBarCallback", "SpikeDetection",
           "TQDMProgressBar", "ThroughputMonitor", "WeightAveraging"]
