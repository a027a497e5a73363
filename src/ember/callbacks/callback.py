"""``lightning.pytorch.callbacks.callback``: ``Callback``, the base class of every callback."""

from ember.callbacks.base import Callback

__all__ = ["Callback"]
