"""ember: a PyTorch training library whose checkpoints never lose work."""

from ember.version import __version__

from ember.callbacks.base import Callback
from ember.checkpoint.io import load_checkpoint, save_checkpoint
from ember.datamodule import DataModule, LightningDataModule
from ember.distributed import rank_zero_only
from ember.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointVersionError,
    MisconfigurationError,
    UnsafeCheckpointError,
)
from ember.module import LightningModule, Module
from ember.seed import seed_everything
from ember.trainer import Trainer

__all__ = [
    "Callback",
    "DataModule",
    "LightningDataModule",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointVersionError",
    "LightningModule",
    "MisconfigurationError",
    "Module",
    "Trainer",
    "UnsafeCheckpointError",
    "__version__",
    "load_checkpoint",
    "rank_zero_only",
    "save_checkpoint",
    "seed_everything",
]
