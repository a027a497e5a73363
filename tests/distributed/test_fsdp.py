"""FSDPStrategy on real gloo processes (tests/distributed/jobs/fsdp_train.py): sharded training equals one
process over the same global batches, and the folder checkpoint saved on 2 ranks loads on 1 and 3 ranks
and in one plain process; a one-process checkpoint resumes under FSDP."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import ember
import jobrunner
from ember.distributed.fsdp import optimizer_state_to_plain

sys.path.insert(0, str(jobrunner.JOBS))
from fsdp_common import build, global_batches, optimizer, read_folder_full  # noqa: E402


def single_process(steps: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = build(seed=0)
    opt = optimizer(model.parameters())
    for i, batch in enumerate(global_batches()[:steps]):
        loss = model.training_step(batch, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, opt


def same_optimizer_state(named: dict, plain: dict, names: list[str]) -> bool:
    """``named`` (by parameter name) holds what ``plain`` (numbered in ``names`` order) holds."""
    return set(plain["state"]) == set(range(len(names))) and all(
        named["state"][names[i]].keys() == s.keys() and all(torch.equal(named["state"][names[i]][k], v)
                                                            for k, v in s.items())
        for i, s in plain["state"].items())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    r = jobrunner.run("fork", "fsdp_train.py", "train", str(out))
    assert r.returncode == 0, r.output
    return out


def test_fsdp_on_two_ranks_trains_as_one_process_on_the_same_global_batches(trained):
    fsdp = torch.load(trained / "fsdp.pt")["weights"]
    alone = single_process(steps=4)[0].state_dict()
    assert fsdp.keys() == alone.keys()
    for k in alone:
        torch.testing.assert_close(fsdp[k], alone[k], rtol=1e-5, atol=1e-6)


def test_each_submodule_with_parameters_and_the_root_are_sharded(trained):
    facts = json.loads((trained / "facts-0.json").read_text())
    assert facts["units"] == ["", "body.0", "body.3"]  # the Linears, then the root (which holds `scale`)
    assert facts["dtensors"] and facts["local_rows"] == 8  # 16 rows of body.0.weight over 2 ranks


def test_a_module_with_configure_model_shards_itself_with_the_mesh(trained):
    facts = json.loads((trained / "facts-0.json").read_text())
    assert facts["mesh_set"]
    assert facts["self_units"] == ["", "encoder"]  # its own choice; ember added only the root


def test_every_rank_gets_the_gathered_loop_state_to_write(trained):
    facts = [json.loads((trained / f"facts-{r}.json").read_text()) for r in range(2)]
    assert [f["gathered"] for f in facts] == [[0, 1], [0, 1]]  # a folder checkpoint is written by every rank
    assert [f["rank0_data"] for f in facts] == [{"rank": 0}, {"rank": 0}]  # as a single-process reader expects
    assert all(f["own_grads"] for f in facts)  # each rank keeps its own gradient shards


def test_layers_configure_model_builds_start_from_rank_zero_and_get_the_default_units(trained):
    facts = [json.loads((trained / f"facts-{r}.json").read_text()) for r in range(2)]
    assert all(f["built_from_rank0"] and f["built_units"] == ["", "layer"] for f in facts)


@pytest.mark.parametrize("how, nproc", [("torchrun", 1), ("launcher", 3)])
def test_folder_saved_on_two_ranks_loads_on_another_number_of_ranks(trained, how, nproc):
    r = jobrunner.run(how, "fsdp_train.py", "load", str(trained), nproc=nproc)
    assert r.returncode == 0, r.output
    ref, got = torch.load(trained / "ref.pt"), torch.load(trained / f"loaded-{nproc}.pt")
    assert got["weights"].keys() == ref["weights"].keys()
    assert all(torch.equal(got["weights"][k], ref["weights"][k]) for k in ref["weights"])
    saved, loaded = ref["optimizer"], got["optimizer"]
    assert loaded["param_groups"] == saved["param_groups"] and loaded["state"].keys() == saved["state"].keys()
    assert all(torch.equal(loaded["state"][p][k], v) for p, s in saved["state"].items() for k, v in s.items())


def test_folder_saved_by_fsdp_loads_in_one_plain_process_into_a_plain_optimizer(trained):
    folder = read_folder_full(trained / "folder")
    model = build(seed=7)
    model.load_state_dict(folder["state_dict"])
    opt = optimizer(model.parameters())
    opt.load_state_dict(optimizer_state_to_plain(folder["optimizer_states"][0]))
    ref = torch.load(trained / "ref.pt")
    assert all(torch.equal(v, ref["weights"][k]) for k, v in model.state_dict().items())
    names = [n for n, _ in model.named_parameters()]
    assert same_optimizer_state(ref["optimizer"], opt.state_dict(), names)
    assert opt.state[model.body[0].weight]["exp_avg"].shape == (16, 6)  # whole, not a shard


def test_single_file_checkpoint_of_one_process_resumes_under_fsdp(tmp_path):
    model, opt = single_process(steps=2)
    ember.save_checkpoint({"state_dict": model.state_dict(), "optimizer_states": [opt.state_dict()]},
                          tmp_path / "plain.ckpt")
    r = jobrunner.run("fork", "fsdp_train.py", "plain", str(tmp_path))
    assert r.returncode == 0, r.output
    got = torch.load(tmp_path / "from-plain.pt")
    assert all(torch.equal(got["after_load"]["weights"][k], v) for k, v in model.state_dict().items())
    names = [n for n, _ in model.named_parameters()]
    assert same_optimizer_state(got["after_load"]["optimizer"], opt.state_dict(), names)
    loss = model.training_step(global_batches()[0], 0)  # the step the job took after loading
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(got["after_step"][k], v, rtol=1e-5, atol=1e-6)
