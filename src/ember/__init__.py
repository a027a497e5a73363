"""ember: a PyTorch training library whose checkpoints never lose work."""

from typing import Any

from ember.version import __version__

from ember import callbacks, core, loggers, utilities
from ember.callbacks import Callback

from ember.checkpoint.io import load_checkpoint, save_checkpoint
from ember.core.datamodule import DataModule, LightningDataModule
from ember.distributed import rank_zero_only
from ember.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointVersionError,
    MisconfigurationError,
    UnsafeCheckpointError,
)
from ember.core.module import LightningModule, Module
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
    "callbacks",
    "cli_lightning_logo",
    "core",
    "loggers",
    "load_checkpoint",
    "rank_zero_only",
    "save_checkpoint",
    "seed_everything",
    "utilities",
]


def cli_lightning_logo() -> None:
    """Print ember's banner (Lightning's example scripts call ``cli_lightning_logo()`` before parsing arguments)."""
    print(f"\n  ember {__version__}: Lightning's API, checkpoints that never lose work\n")


def __getattr__(name: str) -> Any:
    # ember.cli is the command line's package: ``ember.cli.LightningCLI`` imports it (and jsonargparse)
    # only when asked.
    if name == "cli":
        import importlib  # deferred: loaded on first use of the name

        return importlib.import_module("ember.cli")
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
