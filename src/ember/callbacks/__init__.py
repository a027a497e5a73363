"""Callbacks: hooks into fit, each with optional checkpointed state."""

from ember.callbacks.base import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.on_exception import OnExceptionCheckpoint

__all__ = ["Callback", "ModelCheckpoint", "OnExceptionCheckpoint"]
