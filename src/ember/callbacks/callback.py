"""Lightning's module path for the callback base class: ``ember.callbacks.callback.Callback``."""

from ember.core.callback import Callback

__all__ = ["Callback"]
