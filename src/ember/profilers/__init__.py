"""Profilers (Lightning's names): ``Trainer(profiler="simple" | "advanced" | "pytorch" | Profiler())``.

The Trainer times its hooks, steps and batches under Lightning's action names (``run_training_epoch``,
``run_training_batch``, ``[LightningModule]Model.on_train_start``, ``[Callback]<state_key>.<hook>``,
``[Strategy]SingleDeviceStrategy.training_step``, ``[_TrainingEpochLoop].train_dataloader_next``, ...)
and prints (or writes) the summary at the end of each stage. Without a profiler nothing is instrumented."""

from ember.profilers.advanced import AdvancedProfiler
from ember.profilers.base import PassThroughProfiler
from ember.profilers.profiler import Profiler
from ember.profilers.pytorch import PyTorchProfiler
from ember.profilers.simple import SimpleProfiler
from ember import not_supported as _not_supported

globals().update(_not_supported.install("profilers"))

__all__ = ["AdvancedProfiler", "PassThroughProfiler", "Profiler", "PyTorchProfiler", "SimpleProfiler", "XLAProfiler"]
