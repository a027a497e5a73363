"""``lightning.pytorch.plugins``: ember takes its precision as a string (``Trainer(precision="16-mixed")``) and
owns its checkpoint format, so Lightning's plugin objects are importable but refuse to be built, each saying
what to use instead (``ember.not_supported``). ``Precision`` is the class of
``trainer.precision_plugin``."""

from ember.plugins.precision import Precision
from ember import not_supported as _not_supported

globals().update(_not_supported.install("plugins"))

__all__ = ["AsyncCheckpointIO", "BitsandbytesPrecision", "CheckpointIO", "DeepSpeedPrecision", "DoublePrecision",
           "FSDPPrecision", "HalfPrecision", "LayerSync", "MixedPrecision", "Precision", "TorchCheckpointIO",
           "TorchSyncBatchNorm", "TransformerEnginePrecision", "XLACheckpointIO", "XLAPrecision"]
