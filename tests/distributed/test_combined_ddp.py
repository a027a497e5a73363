"""Several training loaders under DDP: each is split between the ranks (tests/distributed/jobs/combined_ddp.py)."""

from __future__ import annotations

import jobrunner


def test_each_of_several_loaders_is_sharded_across_ranks(tmp_path):
    r = jobrunner.run("fork", "combined_ddp.py", str(tmp_path))
    assert r.returncode == 0, r.output
    seen = [(tmp_path / f"rank{i}.txt").read_text().split() for i in (0, 1)]
    a = [s for rank in seen for s in rank if s.startswith("a")]
    assert sorted(a) == [f"a{i}" for i in range(8)]  # every sample of the longer loader once, across ranks
    assert not set(seen[0]) & {s for s in seen[1] if s.startswith("a")}  # no sample of "a" on both ranks
