"""``lightning.pytorch.callbacks.checkpoint``: the base class of callbacks that save checkpoints."""

from __future__ import annotations

from ember.core.callback import Callback


class Checkpoint(Callback):
    """Marks a callback that saves checkpoints (``ModelCheckpoint``, ``OnExceptionCheckpoint``); the Trainer's
    ``checkpoint_callbacks`` are the ``ModelCheckpoint`` instances among them."""


__all__ = ["Checkpoint"]
