"""Lightning's module path for the callback base class: ``ember.callbacks.callback.Callback``."""

from ember.callbacks.base import Callback

__all__ = ["Callback"]
