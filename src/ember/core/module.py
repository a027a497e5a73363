"""``lightning.pytorch.core.module``: ``from ember.core.module import LightningModule``."""

from ember.module import LightningModule

__all__ = ["LightningModule"]
