"""``lightning.pytorch.callbacks.callback``: ``Callback``, the base class of every callback."""

from ember.core.callback import Callback

__all__ = ["Callback"]
