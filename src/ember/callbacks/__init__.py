"""Callbacks: hooks into fit, each with optional checkpointed state (Lightning's names)."""

from ember.core.callback import Callback
from ember.callbacks.checkpoint import Checkpoint
from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.batch_size_finder import BatchSizeFinder
from ember.callbacks.device_stats_monitor import DeviceStatsMonitor
from ember.callbacks.early_stopping import EarlyStoppingReason
from ember.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
from ember.callbacks.gradient_accumulation_scheduler import GradientAccumulationScheduler
from ember.callbacks.lambda_function import LambdaCallback
from ember.callbacks.lr_finder import LearningRateFinder
from ember.callbacks.lr_monitor import LearningRateMonitor
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.model_summary import ModelSummary
from ember.callbacks.on_exception import OnExceptionCheckpoint
from ember.callbacks.prediction_writer import BasePredictionWriter
from ember.callbacks.progress.tqdm_progress import ProgressBarCallback, TQDMProgressBar
from ember.callbacks.rich_model_summary import RichModelSummary
from ember.callbacks.progress.rich_progress import RichProgressBar
from ember.callbacks.stochastic_weight_avg import StochasticWeightAveraging
from ember.callbacks.timer import Timer
from ember import not_supported as _not_supported

ProgressBar = ProgressBarCallback  # Lightning's name for the base class of progress bars
globals().update(_not_supported.install("callbacks"))

__all__ = ["BackboneFinetuning", "BaseFinetuning", "BasePredictionWriter", "BatchSizeFinder", "Callback", "Checkpoint",
           "DeviceStatsMonitor", "EMAWeightAveraging", "EarlyStopping", "EarlyStoppingReason",
           "GradientAccumulationScheduler", "LambdaCallback", "LearningRateFinder", "LearningRateMonitor",
           "ModelCheckpoint", "ModelPruning", "ModelSummary", "OnExceptionCheckpoint", "ProgressBar",
           "ProgressBarCallback", "RichModelSummary", "RichProgressBar", "SpikeDetection", "StochasticWeightAveraging",
           "TQDMProgressBar", "ThroughputMonitor", "Timer", "WeightAveraging"]
