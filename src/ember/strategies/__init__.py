"""``lightning.pytorch.strategies``: the strategies a Trainer runs with (``Trainer(strategy=...)``).

``Strategy`` is the base; ``SingleDeviceStrategy`` one process; ``DDPStrategy`` and ``FSDPStrategy`` several
(they live in ``ember.distributed``). DeepSpeed, XLA and tensor-parallel strategies are not supported
(``ember.not_supported``).
"""

from typing import Any

from ember.distributed.strategy import DDPStrategy, ParallelStrategy
from ember.strategies.single_device import SingleDeviceStrategy
from ember.strategies.strategy import Strategy
from ember import not_supported as _not_supported

globals().update(_not_supported.install("strategies"))

__all__ = ["DDPStrategy", "DeepSpeedStrategy", "FSDPStrategy", "ModelParallelStrategy", "ParallelStrategy",
           "SingleDeviceStrategy", "Strategy"]


def __getattr__(name: str) -> Any:
    # FSDPStrategy on first use: importing torch's FSDP costs ~1.5 s that `import ember` should not pay.
    if name == "FSDPStrategy":
        from ember.distributed.fsdp import FSDPStrategy  # deferred: loaded on first use of the name

        return FSDPStrategy
    raise AttributeError(f"module 'ember.strategies' has no attribute {name!r}")
