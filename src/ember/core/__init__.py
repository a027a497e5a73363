"""Lightning's ``lightning.pytorch.core`` names: ``LightningModule`` (and ``LightningDataModule``)."""

from __future__ import annotations

from typing import Any

from ember.module import LightningModule

__all__ = ["LightningModule"]  # TODO(lead): add "LightningDataModule" once ember.datamodule is merged


def __getattr__(name: str) -> Any:
    if name == "LightningDataModule":
        from ember.core.datamodule import LightningDataModule

        return LightningDataModule
    raise AttributeError(f"module 'ember.core' has no attribute {name!r}")
