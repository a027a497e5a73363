"""load_from_checkpoint(map_location=...) in every form torch.load takes, and strict=False."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ember
from tiny import TinyModel, make_loader, trainer_kwargs


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    trainer = ember.Trainer(max_epochs=1, **trainer_kwargs(root))
    trainer.fit(TinyModel(lr=0.2), make_loader())
    return trainer.checkpoint_callback.best_model_path


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("where", [None, "cpu", torch.device("cpu"), {"cpu": "cpu"}, {torch.device("cuda:0"): "cpu"},
                                   {"cpu": torch.device("cpu")}])
def test_device_and_dict_forms_load_the_same_weights(ckpt, where):
    ref = TinyModel.load_from_checkpoint(ckpt)
    model = TinyModel.load_from_checkpoint(ckpt, map_location=where)
    assert model.hparams.lr == 0.2 and same_weights(model, ref) and model.device == torch.device("cpu")


def test_a_function_is_called_with_each_storage_and_cpu(ckpt):
    calls = []

    def keep(storage, location):
        calls.append((type(storage).__name__, location))
        return storage

    model = TinyModel.load_from_checkpoint(ckpt, map_location=keep)
    assert same_weights(model, TinyModel.load_from_checkpoint(ckpt))
    assert calls and set(calls) == {("UntypedStorage", "cpu")}
    assert TinyModel.load_from_checkpoint(ckpt, map_location=lambda s, loc: None).device == torch.device("cpu")


def test_bad_map_locations_say_what_is_accepted(ckpt):
    with pytest.raises(TypeError, match=r"map_location must be None, a device \(str or torch.device\), a dict"):
        TinyModel.load_from_checkpoint(ckpt, map_location=3)
    with pytest.raises(TypeError, match="map_location function returned int; expected a storage"):
        TinyModel.load_from_checkpoint(ckpt, map_location=lambda s, loc: 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("where", ["cuda:0", {"cpu": "cuda:0"}, lambda s, loc: s.cuda(0)])
def test_every_form_can_move_the_model_to_a_gpu(ckpt, where):
    model = TinyModel.load_from_checkpoint(ckpt, map_location=where)
    assert model.device == torch.device("cuda:0")


def test_strict_false_loads_the_matching_keys_and_warns_about_the_others(ckpt):
    class Wider(TinyModel):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.extra = nn.Linear(2, 2)

    with pytest.raises(ember.CheckpointMismatchError, match=r"missing keys \['extra.weight', 'extra.bias'\]"):
        Wider.load_from_checkpoint(ckpt)
    with pytest.warns(UserWarning, match=r"strict=False: missing keys \['extra.weight', 'extra.bias'\]"):
        model = Wider.load_from_checkpoint(ckpt, strict=False)
    assert torch.equal(model.net[0].weight, TinyModel.load_from_checkpoint(ckpt).net[0].weight)
