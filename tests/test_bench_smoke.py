"""The save benchmark runs end to end (`python -m bench --smoke --only save`, a few seconds) and measures
ember's sync save and both of its background-save designs. The whole suite's smoke run
(`python -m bench --smoke`, about two minutes) is for running by hand.

No timing is asserted: the numbers of a smoke run mean nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

EMBER_NOW = "ember async (now: barrier before user code)"
EMBER_PREV = "ember async (previous: barrier before the optimizer step)"
# a measured row: the method's name, then (after cells without '|') a "min / **median×** / max" ratio cell
TABLES = {
    "## Save: sync save time vs raw write": ["raw", "ember"],
    "## Async save: training stall": [EMBER_NOW, EMBER_PREV],
    "## Async save: training-loop slowdown": [EMBER_NOW, EMBER_PREV],
}


def section(text: str, heading: str) -> str:
    start = text.index(heading) + len(heading)
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def test_bench_smoke_save_measures_every_ember_save_path(tmp_path):
    out = tmp_path / "B.md"
    files = tmp_path / "files"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "save", "--out", str(out), "--dir", str(files)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    # a peer's failure (e.g. a Lightning API change) is reported in its row, but is not ember's
    failed = [ln for ln in (proc.stderr + text).splitlines() if "ember" in ln and "failed" in ln.lower()]
    assert not failed, failed
    for heading, methods in TABLES.items():
        assert heading in text, f"missing {heading!r} in the report"
        body = section(text, heading)
        for method in methods:
            assert re.search(rf"^\| [^|]+ \| {re.escape(method)} \|[^\n]*?-?[0-9.]+ / \*\*", body, re.M), \
                f"no measured row for {method!r} under {heading!r}"
    assert "ember async stall ÷ ember sync save (now: barrier before user code)" in section(text, "## Goals")
    # the benchmark removed its files
    assert not any(files.glob("ember-bench-*"))
