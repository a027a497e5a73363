"""A collections.Counter (MultiStepLR's milestones) is stored and comes back a Counter."""

from __future__ import annotations

from collections import Counter

import torch

from ember.checkpoint.format import codec


def test_a_counter_round_trips_as_a_counter():
    tree, tensors = codec.flatten({"milestones": Counter({2: 1, 5: 2})})
    back = codec.unflatten(tree, tensors)["milestones"]
    assert type(back) is Counter and back == Counter({2: 1, 5: 2}) and back[7] == 0


def test_multisteplr_resumes_from_its_stored_state():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.5)
    tree, tensors = codec.flatten({"s": sched.state_dict()})
    other = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[9], gamma=0.5)
    other.load_state_dict(codec.unflatten(tree, tensors)["s"])
    for _ in range(4):
        opt.step()
        other.step()
    assert opt.param_groups[0]["lr"] == 0.25
