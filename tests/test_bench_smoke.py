"""The benchmark suite runs end to end (`python -m bench --smoke`) and writes every table.

No timing is asserted: the numbers of a smoke run mean nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

HEADINGS = [
    "## Machine and command",
    "## Save: sync save time vs raw write",
    "## Async save: training stall",
    "## Async save: training-loop slowdown",
    "## Load",
    "## Training loop overhead",
    "## Peak memory during a save",
    "## Goals",
]


def test_bench_smoke_writes_every_table(tmp_path):
    out = tmp_path / "B.md"
    files = tmp_path / "files"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--dir", str(files)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    for heading in HEADINGS:
        assert heading in text, f"missing {heading!r} in the report"
    # every ember path ran (a peer's failure, e.g. a Lightning API change, is reported but not ember's fault)
    failed = [ln for ln in (proc.stderr + text).splitlines() if "ember" in ln and "failed" in ln.lower()]
    assert not failed, failed
    for method in ("ember", "ember async", "ember verify", "ember mmap", "vanilla"):
        # a measured row: the method's name, then a "min / **median×** / max" ratio cell
        assert re.search(rf"\| {re.escape(method)} \| -?[0-9.]+ / \*\*", text), f"no measured row for {method}"
    # the benchmark removed its files
    assert not any(files.glob("ember-bench-*"))
