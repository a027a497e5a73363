"""Lightning's module path for ``LearningRateFinder`` (it lives beside the search, in ``ember.tuner.callbacks``)."""

from ember.tuner.callbacks import LearningRateFinder

__all__ = ["LearningRateFinder"]
