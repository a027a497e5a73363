"""Several training loaders under DDP: each is split between the ranks (jobs/combined_ddp.py); a time-based
validation interval decided alike on every rank (jobs/timed_validation.py)."""

from __future__ import annotations

import jobrunner


def test_each_of_several_loaders_is_sharded_across_ranks(tmp_path):
    r = jobrunner.run("fork", "combined_ddp.py", str(tmp_path))
    assert r.returncode == 0, r.output
    seen = [(tmp_path / f"rank{i}.txt").read_text().split() for i in (0, 1)]
    a = [s for rank in seen for s in rank if s.startswith("a")]
    assert sorted(a) == [f"a{i}" for i in range(8)]  # every sample of the longer loader once, across ranks
    assert not set(seen[0]) & {s for s in seen[1] if s.startswith("a")}  # no sample of "a" on both ranks


def test_a_time_based_val_check_interval_validates_every_rank_at_the_same_steps(tmp_path):
    """Each rank reads its own clock, and rank 1's starts 0.3 s late. Without agreeing, rank 0 would validate
    (a collective: the synced val_loss) while rank 1 trains on (DDP's gradient all-reduce)."""
    r = jobrunner.run("fork", "timed_validation.py", str(tmp_path))
    assert r.returncode == 0, r.output
    ranks = [(tmp_path / f"rank{i}.txt").read_text().split() for i in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0][-1] == "done"
    assert len(ranks[0]) > 2, ranks  # it validated mid-epoch (20 batches of >= 10 ms, a 0.1 s interval)
