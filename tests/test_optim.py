"""configure_optimizers(): every form Lightning accepts, and clear errors for the rest."""

from __future__ import annotations

import pytest
import torch

from ember.errors import MisconfigurationError
from ember.loops.optim import parse_optimizers


def params():
    return [torch.nn.Parameter(torch.zeros(2))]


def sgd():
    return torch.optim.SGD(params(), lr=0.1)


def test_single_optimizer():
    o = sgd()
    assert parse_optimizers(o) == ([o], [])


def test_list_of_optimizers():
    a, b = sgd(), sgd()
    assert parse_optimizers([a, b])[0] == [a, b]


def test_pair_of_lists_gives_epoch_schedulers():
    o = sgd()
    s = torch.optim.lr_scheduler.StepLR(o, 1)
    opts, scheds = parse_optimizers(([o], [s]))
    assert opts == [o] and scheds[0].scheduler is s and scheds[0].interval == "epoch"


def test_dict_with_scheduler_config():
    o = sgd()
    s = torch.optim.lr_scheduler.StepLR(o, 1)
    _, scheds = parse_optimizers({"optimizer": o, "lr_scheduler": {"scheduler": s, "interval": "step",
                                                                     "frequency": 3}})
    assert (scheds[0].interval, scheds[0].frequency) == ("step", 3)


def test_dict_with_bare_scheduler():
    o = sgd()
    s = torch.optim.lr_scheduler.StepLR(o, 1)
    assert parse_optimizers({"optimizer": o, "lr_scheduler": s})[1][0].scheduler is s


def test_list_of_dicts():
    a, b = sgd(), sgd()
    opts, scheds = parse_optimizers([{"optimizer": a}, {"optimizer": b,
                                                        "lr_scheduler": torch.optim.lr_scheduler.StepLR(b, 1)}])
    assert opts == [a, b] and len(scheds) == 1


def test_plateau_takes_monitor_from_dict():
    o = sgd()
    s = torch.optim.lr_scheduler.ReduceLROnPlateau(o)
    _, scheds = parse_optimizers({"optimizer": o, "lr_scheduler": s, "monitor": "val_loss"})
    assert scheds[0].monitor == "val_loss" and scheds[0].reduce_on_plateau


@pytest.mark.parametrize(
    "returned, message",
    [
        (None, "returned None"),
        (3, "returned int"),
        ([], "no optimizer"),
        ({"lr_scheduler": None}, "without 'optimizer'"),
        (["sgd"], r"returned \['str'\] where optimizers were expected"),
    ],
)
def test_malformed_returns_name_what_was_received(returned, message):
    with pytest.raises(MisconfigurationError, match=message):
        parse_optimizers(returned)


def test_bad_interval_is_rejected():
    o = sgd()
    with pytest.raises(MisconfigurationError, match="interval must be 'epoch' or 'step'; received 'batch'"):
        parse_optimizers({"optimizer": o, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(o, 1),
                                                           "interval": "batch"}})


def test_plateau_without_monitor_is_rejected():
    o = sgd()
    with pytest.raises(MisconfigurationError, match="ReduceLROnPlateau needs a metric"):
        parse_optimizers({"optimizer": o, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(o)})


def test_scheduler_for_a_foreign_optimizer_is_rejected():
    o = sgd()
    with pytest.raises(MisconfigurationError, match="did not return"):
        parse_optimizers(([o], [torch.optim.lr_scheduler.StepLR(sgd(), 1)]))
