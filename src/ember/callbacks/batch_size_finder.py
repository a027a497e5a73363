"""Lightning's module path for ``BatchSizeFinder`` (it lives beside the search, in ``ember.tuner.callbacks``)."""

from ember.tuner.callbacks import BatchSizeFinder

__all__ = ["BatchSizeFinder"]
