"""``lightning.pytorch.strategies.ddp``: distributed data parallel."""

from ember.distributed.strategy import DDPStrategy

__all__ = ["DDPStrategy"]
