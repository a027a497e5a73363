"""Lightning's ``lightning.pytorch.core`` names: ``LightningModule`` and ``LightningDataModule``."""

from __future__ import annotations

from ember.datamodule import LightningDataModule
from ember.module import LightningModule

__all__ = ["LightningDataModule", "LightningModule"]
