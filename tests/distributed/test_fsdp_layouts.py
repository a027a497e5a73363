"""FSDPStrategy in one process: which submodules become FSDP units, the named <-> numbered optimizer
state layouts, their errors, and a real one-process gloo group for what needs one."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

import jobrunner
from ember.distributed import DistributedError, FSDPStrategy
from ember.distributed.fsdp import optimizer_state_from_plain, optimizer_state_to_plain, shard_units
from ember.errors import CheckpointMismatchError


class Tied(nn.Module):
    """An embedding whose weight the head shares, a block in between, and a parameter of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.block = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4)))
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.gain = nn.Parameter(torch.ones(4))

    def training_step(self, batch, batch_idx=0):
        return self.head(self.block(self.embed(batch)) * self.gain).logsumexp(-1).mean()


def stepped(model: nn.Module, groups=None) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(groups or model.parameters(), lr=0.1)
    model.training_step(torch.tensor([1, 2, 3])).backward()
    opt.step()
    return opt


@pytest.fixture
def solo(monkeypatch):
    """A real one-process gloo job joined through FSDPStrategy.setup()."""
    for k in jobrunner.JOB_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(jobrunner.free_port())}.items():
        monkeypatch.setenv(k, v)
    strategy = FSDPStrategy(accelerator="cpu", timeout=30)
    strategy.setup()
    yield strategy
    strategy.teardown()


# ---------------------------------------------------------------- units
def test_units_are_the_submodules_holding_parameters_innermost_first():
    model = Tied()
    assert shard_units(model) == [model.block[0], model.block[1][0]]


def test_a_tied_weight_is_left_to_the_root():
    model = Tied()
    units = shard_units(model)
    assert model.embed not in units and model.head not in units


# ---------------------------------------------------------------- optimizer state layouts
def test_numbered_state_gets_the_names_torch_gives_it():
    model = Tied()
    opt = stepped(model)
    named = optimizer_state_from_plain(opt.state_dict(), model, opt)
    torch_named = get_optimizer_state_dict(model, opt)  # a plain module: torch's own naming
    assert named["param_groups"] == torch_named["param_groups"]
    assert named["state"].keys() == torch_named["state"].keys()
    assert all(torch.equal(named["state"][p][k], v) for p, s in torch_named["state"].items() for k, v in s.items())


def test_named_state_loads_into_a_plain_optimizer_over_two_groups():
    model = Tied()
    groups = [{"params": [model.gain, model.embed.weight]}, {"params": list(model.block.parameters()), "lr": 0.01}]
    opt = stepped(model, groups)
    named = get_optimizer_state_dict(model, opt)
    fresh = torch.optim.AdamW([{"params": [model.gain, model.embed.weight]},
                               {"params": list(model.block.parameters()), "lr": 0.5}], lr=0.1)
    fresh.load_state_dict(optimizer_state_to_plain(named))
    want, got = opt.state_dict(), fresh.state_dict()
    assert got["param_groups"] == want["param_groups"]  # lr 0.01 came back
    assert all(torch.equal(got["state"][i][k], v) for i, s in want["state"].items() for k, v in s.items())
    assert fresh.state[model.block[1][0].weight]["exp_avg"] is not None


def test_layouts_round_trip():
    model = Tied()
    opt = stepped(model)
    plain = opt.state_dict()
    back = optimizer_state_to_plain(optimizer_state_from_plain(plain, model, opt))
    assert back["param_groups"] == plain["param_groups"] and back["state"].keys() == plain["state"].keys()


def test_a_named_state_is_refused_where_a_numbered_one_is_expected():
    model = Tied()
    opt = stepped(model)
    with pytest.raises(CheckpointMismatchError, match=r"keyed by parameter numbers .*found keys \['str'\]"):
        optimizer_state_from_plain(get_optimizer_state_dict(model, opt), model, opt)
    with pytest.raises(CheckpointMismatchError, match=r"keyed by parameter names .*found keys \['int'\]"):
        optimizer_state_to_plain(opt.state_dict())
    with pytest.raises(CheckpointMismatchError, match=r"'state' and 'param_groups'.*found list"):
        optimizer_state_to_plain([])


def test_a_state_of_other_parameters_is_refused():
    model = Tied()
    opt = stepped(model)
    plain = opt.state_dict()
    other = torch.optim.AdamW(list(model.parameters())[:2])
    with pytest.raises(CheckpointMismatchError,
                       match=r"param_group 0 .* has 6 parameter\(s\) and the optimizer's has 2"):
        optimizer_state_from_plain(plain, model, other)
    two = torch.optim.AdamW([{"params": [model.gain]}, {"params": [model.embed.weight]}])
    with pytest.raises(CheckpointMismatchError, match=r"1 param_group\(s\) and the optimizer has 2"):
        optimizer_state_from_plain(plain, model, two)
    with pytest.raises(CheckpointMismatchError, match="not in the module"):
        optimizer_state_from_plain(plain, nn.Linear(1, 1), opt)


# ---------------------------------------------------------------- the strategy
def test_setup_module_needs_a_joined_group(monkeypatch):
    for k in jobrunner.JOB_VARS:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(DistributedError, match=r"call FSDPStrategy.setup\(\) first"):
        FSDPStrategy(accelerator="cpu").setup_module(nn.Linear(2, 2))


def test_load_state_refuses_another_number_of_optimizers():
    with pytest.raises(CheckpointMismatchError, match=r"1 optimizer state\(s\) and the run has 0 optimizer"):
        FSDPStrategy(accelerator="cpu").load_state(nn.Linear(2, 2), [], {"state_dict": {}, "optimizer_states": [{}]})


def test_tied_model_is_sharded_in_place_and_trains(solo):
    model = Tied()
    assert solo.setup_module(model) is model and solo.setup_module(model) is model
    assert isinstance(model, FSDPModule) and isinstance(model.block[0], FSDPModule)
    assert not isinstance(model.embed, FSDPModule) and model.head.weight is model.embed.weight
    assert all(isinstance(p, DTensor) for p in model.parameters())
    opt = stepped(model)
    assert all(s["step"].item() == 1 for s in opt.state.values())


def test_saved_state_loads_back_into_a_fresh_model(solo):
    model = solo.setup_module(Tied())
    opt = stepped(model)
    saved = solo.state_for_save(model, [opt])
    assert all(isinstance(v, DTensor) for v in saved["state_dict"].values())
    torch.manual_seed(5)
    fresh = solo.setup_module(Tied())
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    template = solo.state_for_save(fresh, [fresh_opt])
    for k, v in saved["state_dict"].items():
        template["state_dict"][k].to_local().copy_(v.to_local())  # what the folder reader does
    template["optimizer_states"] = saved["optimizer_states"]
    solo.load_state(fresh, [fresh_opt], template)
    assert all(torch.equal(a.full_tensor(), b.full_tensor()) for a, b in zip(fresh.parameters(), model.parameters()))
    assert [s["exp_avg"].full_tensor().sum() for s in fresh_opt.state.values()] == \
        [s["exp_avg"].full_tensor().sum() for s in opt.state.values()]


def test_gather_loop_state_without_a_group_returns_the_state(monkeypatch):
    for k in jobrunner.JOB_VARS:
        monkeypatch.delenv(k, raising=False)
    state = {"epoch": 1, "rng": {"torch": torch.tensor([1])}, "data": {}}
    assert FSDPStrategy(accelerator="cpu").gather_loop_state(state) == state


def test_gather_loop_state_on_one_rank_puts_its_own_in_ranks(solo):
    state = {"epoch": 1, "rng": {"seed": 3}, "data": {"pos": 2}, "accumulated_grads": {}}
    assert solo.gather_loop_state(state) == {**state, "ranks": [{"rng": {"seed": 3}, "data": {"pos": 2}}]}


class BuildsOnly(nn.Module):
    """Lightning's pattern without sharding: configure_model builds the layers and shards nothing."""

    def configure_model(self) -> None:
        self.layers = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
        self.mesh = self.device_mesh


def test_configure_model_that_shards_nothing_gets_the_default_units(solo):
    model = solo.setup_module(BuildsOnly())
    assert model.mesh is solo.device_mesh
    assert isinstance(model, FSDPModule) and all(isinstance(m, FSDPModule) for m in model.layers)


def test_load_state_names_missing_and_unexpected_weights(solo):
    model = solo.setup_module(Tied())
    weights = dict(solo.state_for_save(model, [])["state_dict"])
    weights["extra.weight"] = weights.pop("gain")
    with pytest.raises(CheckpointMismatchError, match=r"missing \['gain'\], unexpected \['extra.weight'\]"):
        solo.load_state(model, [], {"state_dict": weights, "optimizer_states": []})


def test_load_state_refuses_a_numbered_optimizer_state_and_says_how_to_convert(solo):
    model = solo.setup_module(Tied())
    opt = stepped(model)
    saved = {"state_dict": solo.state_for_save(model, [])["state_dict"], "optimizer_states": [opt.state_dict()]}
    with pytest.raises(CheckpointMismatchError, match=r"keyed by parameter numbers.*optimizer_state_from_plain"):
        solo.load_state(model, [opt], saved)
