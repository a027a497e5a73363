"""AdvancedProfiler: cProfile statistics of every action (Lightning's AdvancedProfiler)."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
from pathlib import Path

from ember.profilers.profiler import Profiler


class AdvancedProfiler(Profiler):
    """Runs one ``cProfile.Profile`` per action; the report lists each action's functions by cumulative
    time, cut to ``line_count_restriction`` (a count, or a fraction of the lines when < 1).
    ``dump_stats`` also writes each action's raw statistics to ``<dirpath>/<stage>-<filename>-<action>.prof``.

    Args:
        dirpath: folder of the report (and ``.prof`` files); ``None`` uses the Trainer's ``log_dir``.
        filename: name part of the report file; ``None`` prints the report to standard output.
        line_count_restriction: how many lines of each action's statistics to keep: a count, or a fraction
            of them when below 1 (default 1.0: all).
        dump_stats: also write each action's raw ``pstats`` file; raises ``ValueError`` at summary time when
            there is no ``dirpath``.
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None,
                 line_count_restriction: float = 1.0, dump_stats: bool = False) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.profiled_actions: dict[str, cProfile.Profile] = {}
        self.line_count_restriction = line_count_restriction
        self.dump_stats = dump_stats

    def start(self, action_name: str) -> None:
        profiler = self.profiled_actions.get(action_name)
        if profiler is None:
            profiler = self.profiled_actions[action_name] = cProfile.Profile()
        profiler.enable()

    def stop(self, action_name: str) -> None:
        profiler = self.profiled_actions.get(action_name)
        if profiler is None:
            raise ValueError(f"the profiler action {action_name!r} was stopped but never started; call "
                             f"start({action_name!r}) first.")
        profiler.disable()

    def _dump(self, action: str, profiler: cProfile.Profile) -> None:
        if self.dirpath is None:
            raise ValueError("AdvancedProfiler(dump_stats=True) needs a folder: give dirpath=..., or run it under a "
                             "Trainer (its log_dir is used).")
        os.makedirs(self.dirpath, exist_ok=True)
        profiler.dump_stats(os.path.join(self.dirpath, self._prepare_filename(action_name=action, extension=".prof")))

    def summary(self) -> str:
        stats = {}
        for action, profiler in self.profiled_actions.items():
            if self.dump_stats:
                self._dump(action, profiler)
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("cumulative").print_stats(
                self.line_count_restriction)
            stats[action] = text.getvalue()
        return self._stats_to_str(stats)

    def teardown(self, stage: str | None) -> None:
        super().teardown(stage)
        self.profiled_actions = {}
