"""ember.Module: hyperparameters, load_from_checkpoint, logging outside fit."""

from __future__ import annotations

import random
from argparse import Namespace

import pytest
import torch
from torch import nn

import ember
from ember.core.module import AttributeDict
from tiny import TinyModel, make_loader, trainer_kwargs


def fitted_checkpoint(tmp_path, model=None):
    model = model or TinyModel()
    trainer = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    trainer.fit(model, make_loader())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    return model, path


def test_lightning_module_is_the_same_class():
    assert ember.LightningModule is ember.Module


def test_save_hyperparameters_captures_init_arguments_with_defaults():
    m = TinyModel(in_dim=4, lr=0.5)
    assert m.hparams == {"in_dim": 4, "out_dim": 2, "lr": 0.5, "scheduler": None}
    assert m.hparams.lr == 0.5


def test_save_hyperparameters_ignore_leaves_names_out():
    class M(ember.Module):
        def __init__(self, width=3, backbone=None):
            super().__init__()
            self.save_hyperparameters(ignore=["backbone"])

    assert dict(M(width=5, backbone=nn.Linear(1, 1)).hparams) == {"width": 5}


def test_save_hyperparameters_with_names_selects_them():
    class M(ember.Module):
        def __init__(self, a=1, b=2):
            super().__init__()
            self.save_hyperparameters("b")

    assert dict(M().hparams) == {"b": 2}


def test_save_hyperparameters_rejects_unknown_names():
    class M(ember.Module):
        def __init__(self, a=1):
            super().__init__()
            self.save_hyperparameters("nope")

    with pytest.raises(ember.MisconfigurationError, match="not __init__ arguments: \\['nope'\\]"):
        M()


def test_hparams_assignment_rejects_other_types():
    class M(ember.Module):
        def __init__(self):
            super().__init__()
            self.hparams = 3

    with pytest.raises(ember.MisconfigurationError, match="Namespace or a dict; received int"):
        M()


def test_load_from_checkpoint_rebuilds_from_saved_hparams(tmp_path):
    model, path = fitted_checkpoint(tmp_path, TinyModel(lr=0.05))
    loaded = TinyModel.load_from_checkpoint(path)
    assert loaded.hparams.lr == 0.05
    for a, b in zip(model.parameters(), loaded.parameters()):
        assert torch.equal(a, b)


def test_load_from_checkpoint_kwargs_override_saved_hparams(tmp_path):
    _, path = fitted_checkpoint(tmp_path)
    assert TinyModel.load_from_checkpoint(path, lr=0.9).hparams.lr == 0.9


def test_load_from_checkpoint_names_missing_init_arguments(tmp_path):
    class NoHparams(ember.Module):
        def __init__(self, width):
            super().__init__()
            self.l1 = nn.Linear(4, width)

    m = NoHparams(2)
    trainer = ember.Trainer(**trainer_kwargs(tmp_path))
    trainer.module = m
    trainer.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    with pytest.raises(ember.MisconfigurationError, match=r"argument\(s\) \['width'\].*width=\.\.\."):
        NoHparams.load_from_checkpoint(tmp_path / "w.ckpt")
    assert NoHparams.load_from_checkpoint(tmp_path / "w.ckpt", width=2).l1.out_features == 2


def test_load_from_checkpoint_rejects_unknown_kwargs(tmp_path):
    _, path = fitted_checkpoint(tmp_path)
    with pytest.raises(ember.MisconfigurationError, match="does not take"):
        TinyModel.load_from_checkpoint(path, bogus=1)


def test_strict_load_names_missing_and_unexpected_keys(tmp_path):
    _, path = fitted_checkpoint(tmp_path)

    class Other(TinyModel):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.extra = nn.Linear(1, 1)

    with pytest.raises(ember.CheckpointMismatchError, match=r"missing keys \['extra.weight', 'extra.bias'\]"):
        Other.load_from_checkpoint(path)


def test_non_strict_load_loads_the_keys_that_match(tmp_path):
    model, path = fitted_checkpoint(tmp_path)

    class Other(TinyModel):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.extra = nn.Linear(1, 1)

    with pytest.warns(UserWarning, match="strict=False"):
        loaded = Other.load_from_checkpoint(path, strict=False)
    assert torch.equal(loaded.net[0].weight, model.net[0].weight)


def test_shape_mismatch_is_a_checkpoint_error(tmp_path):
    _, path = fitted_checkpoint(tmp_path)
    with pytest.raises(ember.CheckpointMismatchError, match="shapes differ"):
        TinyModel.load_from_checkpoint(path, out_dim=5)


def test_load_from_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt: no such file"):  # a CheckpointNotFoundError
        TinyModel.load_from_checkpoint(tmp_path / "nope.ckpt")


def test_load_from_checkpoint_leaves_global_rng_untouched(tmp_path):
    _, path = fitted_checkpoint(tmp_path)
    ember.seed_everything(7)
    expected = (torch.rand(3), random.random())
    ember.seed_everything(7)
    TinyModel.load_from_checkpoint(path)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_load_from_checkpoint_honours_map_location(tmp_path):
    _, path = fitted_checkpoint(tmp_path)
    assert TinyModel.load_from_checkpoint(path, map_location="cpu").device == torch.device("cpu")


def test_log_outside_fit_says_where_to_log(tmp_path):
    model = TinyModel()
    with pytest.warns(UserWarning, match="not registered on the model yet"):  # no Trainer yet: Lightning warns
        model.log("x", 1.0)
    ember.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                  default_root_dir=str(tmp_path)).fit(model, make_loader())
    with pytest.raises(ember.MisconfigurationError, match="outside trainer.fit"):  # after fit: an error
        model.log("x", 1.0)


def test_attribute_dict_names_missing_entries():
    with pytest.raises(AttributeError, match="has no entry 'b'"):
        AttributeDict(a=1).b


def test_namespace_hparams_survive_as_namespace_in_checkpoint(tmp_path):
    class M(TinyModel):
        def __init__(self, hparams):
            super().__init__(lr=hparams.lr)
            self.hparams = hparams

    model, path = fitted_checkpoint(tmp_path, M(Namespace(lr=0.2, scheduler=None)))
    ckpt = ember.load_checkpoint(path)
    assert ckpt["hparams_type"] == "Namespace" and ckpt["hparams_name"] == "hparams"
    assert M.load_from_checkpoint(path).hparams == Namespace(lr=0.2, scheduler=None)


def test_unstorable_hparams_are_left_out_with_a_warning_saying_how_to_load(tmp_path):
    class WithBackbone(TinyModel):
        def __init__(self, backbone, **kw):
            super().__init__(**kw)
            self.backbone = backbone

    model = WithBackbone(nn.Linear(4, 4))
    with pytest.warns(UserWarning, match=r"'backbone' \(Linear\).*load_from_checkpoint\(path, backbone=\.\.\.\)"):
        _, path = fitted_checkpoint(tmp_path, model)
    assert "backbone" not in ember.load_checkpoint(path)["hyper_parameters"]
    loaded = WithBackbone.load_from_checkpoint(path, backbone=nn.Linear(4, 4))
    assert torch.equal(loaded.backbone.weight, model.backbone.weight)
