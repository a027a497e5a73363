"""``lightning.pytorch.core.datamodule``: ``from ember.core.datamodule import LightningDataModule``."""

from ember.datamodule import LightningDataModule

__all__ = ["LightningDataModule"]
