"""``lightning.pytorch.callbacks.on_exception_checkpoint``: save a checkpoint when fit raises."""

from ember.callbacks.on_exception import OnExceptionCheckpoint

__all__ = ["OnExceptionCheckpoint"]
