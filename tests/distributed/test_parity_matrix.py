"""The Lightning parity program on 2 ranks (tests/distributed/jobs/parity_matrix.py): ember under
``strategy="ddp"`` and ``"fsdp"`` (ember's self-launch) against real PyTorch Lightning's DDP (its own
launcher), rank by rank: the same hook calls, the same callback/logged/progress-bar metrics (each rank
its own shard's values, as the program logs without sync_dist), the same steps, parameters and test
results. One launch per framework and strategy, shared by the cases."""

from __future__ import annotations

import json

import jobrunner
import pytest
import torch

pytest.importorskip("pytorch_lightning")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("parity")


def _launch(root, framework: str, strategy: str) -> list[dict]:
    args = [str(root), "--framework", framework, "--strategy", strategy]
    if framework == "ember":
        r = jobrunner.run("fork", "parity_matrix.py", *args, timeout=600)
    else:  # Lightning starts its own second process from this plain one
        r = jobrunner.run("fork", "parity_matrix.py", *args, nproc=1, timeout=600)
    assert r.returncode == 0, r.output[-6000:]
    return [json.loads((root / f"{framework}-{strategy}-rank{i}.json").read_text()) for i in (0, 1)]


@pytest.fixture(scope="module")
def lightning(root):
    return _launch(root, "lightning", "ddp")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_ember_on_two_ranks_agrees_with_lightning_ddp_rank_by_rank(strategy, root, lightning):
    ours = _launch(root, "ember", strategy)
    for rank, (e, pl) in enumerate(zip(ours, lightning)):
        assert e.keys() == pl.keys()
        for case in pl:
            a, b = e[case], pl[case]
            where = f"{strategy}, rank {rank}, case {case}"
            assert a["calls"] == b["calls"], where
            assert a["test_calls"] == b["test_calls"], where
            assert a["step"] == b["step"], where
            for kind in ("callback", "logged", "bar"):
                assert set(a[kind]) == set(b[kind]), (where, kind)
                assert a[kind] == pytest.approx(b[kind], rel=1e-5), (where, kind)
            assert all(torch.allclose(torch.tensor(x), torch.tensor(y), atol=1e-6) for x, y in
                       zip(a["params"], b["params"])), where
            assert len(a["tested"]) == len(b["tested"]) == 1 and a["tested"][0] == pytest.approx(b["tested"][0]), where
