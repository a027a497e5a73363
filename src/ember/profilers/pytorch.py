"""PyTorchProfiler: ``torch.profiler`` around the run, each action a ``record_function`` range
(Lightning's PyTorchProfiler, for CPU and CUDA)."""

from __future__ import annotations

from ember.not_supported import placeholder

import os
from pathlib import Path
from typing import Any

import torch

from ember.errors import MisconfigurationError
from ember.profilers.profiler import Profiler

_SORT_KEYS = ("cpu_time", "cuda_time", "cpu_time_total", "cuda_time_total", "cpu_memory_usage",
              "cuda_memory_usage", "self_cpu_memory_usage", "self_cuda_memory_usage", "count")


class PyTorchProfiler(Profiler):
    """Profiles operators with ``torch.profiler.profile`` (extra keyword arguments go to it, e.g.
    ``profile_memory=True``, ``with_stack=True``), from the first profiled action to the stage's end;
    every action is a ``record_function`` range. The report is ``key_averages().table(...)`` sorted
    by ``sort_by_key`` (default: ``cuda_time_total`` with CUDA, else ``cpu_time_total``) with
    ``row_limit`` rows, grouped by input shapes with ``group_by_input_shapes``. ``export_to_chrome``
    writes a Chrome trace ``<dirpath>/<stage>-<filename>.pt.trace.json`` when a filename is given.

    Args:
        dirpath: folder of the report and trace; ``None`` uses the Trainer's ``log_dir``.
        filename: name part of the report and trace files; ``None`` prints the report and writes no trace.
        group_by_input_shapes: group the table's rows by operator input shapes (turns on ``record_shapes``,
            unless ``record_shapes=False`` is passed).
        emit_nvtx: not supported; True raises ``MisconfigurationError``.
        export_to_chrome: write the Chrome trace (default True; needs ``filename``).
        row_limit: the number of rows of the report's table (default 20).
        sort_by_key: the table's sort column, one of ``cpu_time``, ``cuda_time``, ``cpu_time_total``,
            ``cuda_time_total``, the ``*_memory_usage`` keys or ``count``; another raises ``MisconfigurationError``.
        record_module_names: stored as an attribute for Lightning's API; ember adds no per-module ranges.
        table_kwargs: extra keyword arguments of ``key_averages().table``.
        **profiler_kwargs: keyword arguments of ``torch.profiler.profile`` (``activities`` defaults to CPU, plus
            CUDA when available).
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None,
                 group_by_input_shapes: bool = False, emit_nvtx: bool = False, export_to_chrome: bool = True,
                 row_limit: int = 20, sort_by_key: str | None = None, record_module_names: bool = True,
                 table_kwargs: dict[str, Any] | None = None, **profiler_kwargs: Any) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        if sort_by_key is not None and sort_by_key not in _SORT_KEYS:
            raise MisconfigurationError(f"sort_by_key must be one of {list(_SORT_KEYS)}; received {sort_by_key!r}.")
        if emit_nvtx:
            raise MisconfigurationError("PyTorchProfiler(emit_nvtx=True) is not supported by ember; run the script "
                                        "under nvprof/nsys with torch.autograd.profiler.emit_nvtx() yourself.")
        self.group_by_input_shapes = group_by_input_shapes and profiler_kwargs.get("record_shapes", True)
        if self.group_by_input_shapes:
            profiler_kwargs["record_shapes"] = True
        self.export_to_chrome, self.row_limit = export_to_chrome, row_limit
        self.record_module_names = record_module_names
        self._sort_by_key = sort_by_key or ("cuda_time_total" if torch.cuda.is_available() else "cpu_time_total")
        self._table_kwargs = table_kwargs or {}
        self._profiler_kwargs = profiler_kwargs
        self.profiler: torch.profiler.profile | None = None
        self._ranges: dict[str, Any] = {}
        self.function_events = None

    def start(self, action_name: str) -> None:
        if self.profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            kwargs = {"activities": activities, **self._profiler_kwargs}
            self.profiler = torch.profiler.profile(**kwargs)
            self.profiler.__enter__()
        if action_name not in self._ranges:
            rng = torch.profiler.record_function(action_name)
            rng.__enter__()
            self._ranges[action_name] = rng

    def stop(self, action_name: str) -> None:
        rng = self._ranges.pop(action_name, None)
        if rng is not None:
            rng.__exit__(None, None, None)

    def _finish(self) -> None:
        if self.profiler is None:
            return
        for name in list(self._ranges):
            self.stop(name)
        self.profiler.__exit__(None, None, None)
        self.function_events = self.profiler.events()
        if self.export_to_chrome and self.filename and self.dirpath:
            os.makedirs(self.dirpath, exist_ok=True)
            self.profiler.export_chrome_trace(
                os.path.join(self.dirpath, self._prepare_filename(extension=".pt.trace.json")))
        self._averages = self.profiler.key_averages(group_by_input_shape=self.group_by_input_shapes)
        self.profiler = None

    def summary(self) -> str:
        self._finish()
        if self.function_events is None:
            return ""
        table = self._averages.table(sort_by=self._sort_by_key, row_limit=self.row_limit, **self._table_kwargs)
        return self._stats_to_str({"records": table})

    def teardown(self, stage: str | None) -> None:
        self._finish()
        super().teardown(stage)


# Lightning's helper classes of this module, not rebuilt (ember.not_supported says why and what to use)
RegisterRecordFunction = placeholder("profilers.pytorch.RegisterRecordFunction")
ScheduleWrapper = placeholder("profilers.pytorch.ScheduleWrapper")
