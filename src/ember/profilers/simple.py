"""SimpleProfiler: the wall time of each action (Lightning's report: mean, calls, total, percentage)."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

from ember.profilers.profiler import Profiler


class SimpleProfiler(Profiler):
    """Times every action; ``extended`` adds the number of calls, the total and each action's share
    of the whole run to the report (else it shows mean and total only).

    Args:
        dirpath: folder of the report file; ``None`` uses the Trainer's ``log_dir``.
        filename: name part of the report file; ``None`` prints the report to standard output.
        extended: add calls, total and percentage columns (default True); False shows mean and total.
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None, extended: bool = True) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.current_actions: dict[str, float] = {}
        self.recorded_durations: dict[str, list[float]] = defaultdict(list)
        self.extended = extended
        self.start_time = time.monotonic()

    def start(self, action_name: str) -> None:
        if action_name in self.current_actions:
            raise ValueError(f"the profiler action {action_name!r} was started twice; stop it before starting it "
                             "again.")
        self.current_actions[action_name] = time.monotonic()

    def stop(self, action_name: str) -> None:
        end = time.monotonic()
        started = self.current_actions.pop(action_name, None)
        if started is None:
            raise ValueError(f"the profiler action {action_name!r} was stopped but never started; call "
                             f"start({action_name!r}) first.")
        self.recorded_durations[action_name].append(end - started)

    def _rows(self) -> tuple[float, list[tuple[str, float, int, float, float]]]:
        total = time.monotonic() - self.start_time
        rows = [(a, sum(d) / len(d), len(d), sum(d), 100.0 * sum(d) / total if total else 0.0)
                for a, d in self.recorded_durations.items() if d]
        rows.sort(key=lambda r: r[3], reverse=True)
        return total, rows

    def summary(self) -> str:
        if not self.recorded_durations:
            return ""
        stage = f"{self._stage.upper()} " if self._stage is not None else ""
        total, rows = self._rows()
        width = max(len("Action"), *(len(r[0]) for r in rows)) + 2
        if self.extended:
            head = ("Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %")
            cells = [("Total", "-", str(sum(r[2] for r in rows)), f"{total:.5}", "100 %")]
            cells += [(a, f"{m:.5}", str(n), f"{t:.5}", f"{p:.5}") for a, m, n, t, p in rows]
        else:
            head = ("Action", "Mean duration (s)", "Total time (s)")
            cells = [(a, f"{m:.5}", f"{t:.5}") for a, m, _, t, _ in rows]
        line = "-" * (width + 20 * (len(head) - 1) + 3 * len(head))
        fmt = lambda c: "|  " + c[0].ljust(width) + "".join(f"\t|  {x:<16}" for x in c[1:])  # noqa: E731
        out = [stage + "Profiler Report", "", line, fmt(head), line]
        if self.extended:
            out += [fmt(cells[0]), line]
            cells = cells[1:]
        out += [fmt(c) for c in cells] + [line]
        return os.linesep.join(out)
