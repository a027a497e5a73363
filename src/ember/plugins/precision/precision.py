"""``lightning.pytorch.plugins.precision.precision``: the class of ``trainer.precision_plugin``."""

from ember.precision import Precision

__all__ = ["Precision"]
