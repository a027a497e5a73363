"""PassThroughProfiler: records nothing (what ``Trainer(profiler=None)`` has, as in Lightning)."""

from __future__ import annotations

from ember.profilers.profiler import Profiler


class PassThroughProfiler(Profiler):
    """A profiler that does nothing; the Trainer does not instrument its loop for it.

    Args:
        dirpath: accepted for the base class's signature; nothing is written.
        filename: accepted for the base class's signature; nothing is written.
    """

    def start(self, action_name: str) -> None:
        pass

    def stop(self, action_name: str) -> None:
        pass
