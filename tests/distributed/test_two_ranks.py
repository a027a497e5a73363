"""What each of 2 real processes (gloo) sees: environment, ranks, sampler shards, reduce, loop state.

One probe job per launch mode (torchrun, ember's launcher) writes what every rank saw; each test
checks one behaviour of it."""

from __future__ import annotations

import json

import pytest

import jobrunner

MODES = ["torchrun", "launcher"]


@pytest.fixture(scope="module", params=MODES)
def ranks(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"probe-{request.param}")
    # a relative script path and a change of directory before launching: the launcher re-runs it anyway
    r = jobrunner.run(request.param, "probe.py", str(out), "--chdir", str(out), relative=True)
    assert r.returncode == 0, r.output
    return [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]


def test_each_process_knows_its_rank_and_the_world(ranks):
    assert [(r["rank"], r["local_rank"], r["world_size"], r["is_global_zero"]) for r in ranks] == \
        [(0, 0, 2, True), (1, 1, 2, False)]
    assert {r["backend"] for r in ranks} == {"gloo"} and {r["device"] for r in ranks} == {"cpu"}
    assert ranks[0]["pid"] != ranks[1]["pid"]


def test_rank_zero_only_runs_on_rank_zero_only(ranks):
    assert [r["rank_zero_only"] for r in ranks] == ["ran", None]


def test_shuffled_shards_are_disjoint_and_cover_the_dataset(ranks):
    for epoch in range(2):
        a, b = ranks[0]["shuffled"][epoch], ranks[1]["shuffled"][epoch]
        assert not set(a) & set(b)
        assert sorted(a + b) == list(range(20))


def test_shuffled_shards_change_each_epoch(ranks):
    assert all(r["shuffled"][0] != r["shuffled"][1] for r in ranks)


def test_shuffle_and_batch_size_are_kept(ranks):
    assert all(r["sampler_shuffle"] and r["shuffled_batch_size"] == 3 for r in ranks)


def test_sequential_loader_is_sharded_in_order(ranks):
    assert ranks[0]["sequential"][0] == list(range(0, 20, 2))
    assert ranks[1]["sequential"][0] == list(range(1, 20, 2))


def test_loader_with_a_distributed_sampler_is_left_alone(ranks):
    assert all(r["left_alone"] for r in ranks)


def test_training_step_through_ddp_averages_gradients(ranks):
    assert [r["step_grad"] for r in ranks] == [[1.5, 1.5, 1.5]] * 2  # the mean of rank 0's 1s and rank 1's 2s
    assert all(r["forward_restored"] for r in ranks)


def test_reduce_agrees_on_every_rank(ranks):
    assert [r["reduce"] for r in ranks] == [{"mean": 1.5, "sum": 3.0, "max": 2.0, "min": 1.0}] * 2


def test_reduce_mean_of_ints_is_a_float_mean(ranks):
    assert [r["reduce_int_mean"] for r in ranks] == [1.5, 1.5]


def test_reduce_leaves_its_input_unchanged(ranks):
    assert [r["reduce_input_unchanged"] for r in ranks] == [1.0, 2.0]


def test_any_rank_is_true_everywhere_when_one_rank_says_so(ranks):
    assert [r["any_rank"] for r in ranks] == [[True, False]] * 2


def test_broadcast_object_gives_the_source_ranks_object(ranks):
    assert [r["broadcast"] for r in ranks] == [{"from": 1}] * 2


def test_loop_state_is_gathered_on_rank_zero_only(ranks):
    assert [r["gathered_is_none"] for r in ranks] == [False, True]


def test_checkpoint_holds_every_ranks_distinct_loop_state(ranks):
    assert ranks[0]["ranks_saved"] == 2 and ranks[0]["ranks_differ"]


def test_checkpoint_keeps_rank_zeros_rng_where_a_single_process_one_has_it(ranks):
    assert ranks[0]["top_rng_is_rank0"]


def test_each_rank_gets_its_own_rng_state_back(ranks):
    assert all(r["scatter_rng_own"] for r in ranks)


def test_each_rank_gets_its_own_data_position_back(ranks):
    assert all(r["scatter_data_own"] and r["scatter_position"] == [0, 1, 1] for r in ranks)
    assert all(r["scatter_drops_ranks"] for r in ranks)
