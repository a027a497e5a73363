"""``lightning.pytorch.plugins.precision``: ``Precision`` (the class of ``trainer.precision_plugin``); the
plugin classes are not supported: pass ``Trainer(precision="32" | "16-mixed" | "bf16-mixed")``."""

from ember.plugins.precision.precision import Precision
from ember import not_supported as _not_supported

globals().update(_not_supported.install("plugins.precision"))

__all__ = ["BitsandbytesPrecision", "DeepSpeedPrecision", "DoublePrecision", "FSDPPrecision", "HalfPrecision",
           "MixedPrecision", "Precision", "TransformerEnginePrecision", "XLAPrecision"]
