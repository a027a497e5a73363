"""Callbacks: hooks into fit, each with optional checkpointed state."""

from ember.callbacks.base import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint

__all__ = ["Callback", "ModelCheckpoint"]
