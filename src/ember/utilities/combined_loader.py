"""Lightning's path for ``CombinedLoader`` (it lives with the loops' data handling, ``ember.loops.combined_loader``)."""

from ember.loops.combined_loader import CombinedLoader

__all__ = ["CombinedLoader"]
