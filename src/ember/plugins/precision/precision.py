"""``lightning.pytorch.plugins.precision.precision``: the class of ``trainer.precision_plugin``."""

from ember.loops.precision import Precision

__all__ = ["Precision"]
