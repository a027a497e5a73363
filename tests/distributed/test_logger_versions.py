"""Loggers in a torch.distributed job: every rank uses rank 0's version folder."""

from __future__ import annotations

import jobrunner


def test_every_rank_agrees_on_the_loggers_version_folder(tmp_path):
    (tmp_path / "lightning_logs/version_0").mkdir(parents=True)  # an earlier run: the next is version_1
    (tmp_path / "lightning_logs/version_0/metrics.csv").write_text("step\n")
    result = jobrunner.run("torchrun", "logger_versions.py", str(tmp_path))
    assert result.returncode == 0, result.output[-3000:]
    assert "rank 0 versions [1, 0]" in result.output and "rank 1 versions [1, 0]" in result.output
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0", "version_1"]
