"""``lightning.pytorch.strategies.parallel``: what strategies over several processes share."""

from ember.distributed.strategy import ParallelStrategy

__all__ = ["ParallelStrategy"]
