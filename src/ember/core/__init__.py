"""What users subclass: LightningModule (module), its hooks, LightningDataModule, manual optimization, hparams files,
export."""

from __future__ import annotations

from ember.core.datamodule import LightningDataModule
from ember.core.module import LightningModule

__all__ = ["LightningDataModule", "LightningModule"]
