"""Lightning's ``lightning.pytorch.core`` names: ``LightningModule`` and ``LightningDataModule``."""

from __future__ import annotations

from ember.core.datamodule import LightningDataModule
from ember.core.module import LightningModule

__all__ = ["LightningDataModule", "LightningModule"]
