"""``lightning.pytorch.strategies.fsdp``: fully sharded data parallel (FSDP2, sharded checkpoints)."""

from ember.distributed.fsdp import FSDPStrategy

__all__ = ["FSDPStrategy"]
