"""Mirrors the ``load_from_checkpoint`` entry of Lightning's LightningModule API page
(https://lightning.ai/docs/pytorch/stable/common/lightning_module.html#load-from-checkpoint):
``MyLightningModule.load_from_checkpoint(path, hparams_file="/path/to/hparams_file.yaml")``, with the
``hparams.yaml`` a logger writes next to its metrics (or an ``hparams.csv`` of ``key,value`` rows), whose
values override the checkpoint's. Only the imports differ."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl
from ember.loggers import CSVLogger

yaml = pytest.importorskip("yaml")


class LitModel(pl.LightningModule):
    def __init__(self, hidden: int = 4, learning_rate: float = 0.1, activation: str = "relu"):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)


class NoSavedHparams(LitModel):
    """Never called save_hyperparameters: its checkpoints hold no init arguments."""

    def __init__(self, hidden: int, learning_rate: float):
        pl.LightningModule.__init__(self)
        self.learning_rate = learning_rate
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.learning_rate)


def write(path, text):
    """``path.write_text(text)`` whole at once (a temporary file, then ``os.replace``): under the strategy matrix
    both ranks write the same file into their shared folder and read it back, and a rank reading it while the
    other truncates it (``write_text``) would find it empty."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train(root, model):
    data = DataLoader(TensorDataset(torch.randn(8, 3), torch.randn(8, 1)), batch_size=4)
    trainer = pl.Trainer(max_epochs=1, logger=CSVLogger(root), enable_progress_bar=False)
    trainer.fit(model, data)
    return trainer.checkpoint_callback.best_model_path, root / "lightning_logs" / "version_0" / "hparams.yaml"


def test_the_loggers_hparams_yaml_overrides_the_checkpoint(tmp_path):
    ckpt, hparams_yaml = train(tmp_path, LitModel(hidden=4, learning_rate=0.1))
    assert yaml.safe_load(hparams_yaml.read_text()) == {"hidden": 4, "learning_rate": 0.1, "activation": "relu"}

    edited = tmp_path / "edited.yaml"
    write(edited, "learning_rate: 0.001\nactivation: gelu\n")
    model = LitModel.load_from_checkpoint(ckpt, hparams_file=edited)
    assert model.hparams == {"hidden": 4, "learning_rate": 0.001, "activation": "gelu"}
    model = LitModel.load_from_checkpoint(ckpt, hparams_file=edited, activation="tanh")  # kwargs win
    assert model.hparams.activation == "tanh" and model.hparams.learning_rate == 0.001
    model = LitModel.load_from_checkpoint(ckpt, hparams_file=str(hparams_yaml))
    assert model.hparams == {"hidden": 4, "learning_rate": 0.1, "activation": "relu"}


def test_the_file_supplies_arguments_a_checkpoint_lacks(tmp_path):
    ckpt, _ = train(tmp_path, NoSavedHparams(hidden=6, learning_rate=0.1))
    with pytest.raises(pl.MisconfigurationError, match="hidden"):
        NoSavedHparams.load_from_checkpoint(ckpt)
    hparams_yaml = tmp_path / "hparams.yaml"
    write(hparams_yaml, yaml.safe_dump({"hidden": 6, "learning_rate": 0.5}))
    model = NoSavedHparams.load_from_checkpoint(ckpt, hparams_file=hparams_yaml)
    assert model.net[0].out_features == 6 and model.learning_rate == 0.5
    assert torch.equal(model.net[0].weight, pl.load_checkpoint(ckpt)["state_dict"]["net.0.weight"])


def test_an_hparams_csv_of_key_value_rows(tmp_path):
    ckpt, _ = train(tmp_path, LitModel())
    hparams_csv = tmp_path / "hparams.csv"
    write(hparams_csv, "key,value\nhidden,4\nlearning_rate,0.25\nactivation,gelu\n")
    model = LitModel.load_from_checkpoint(ckpt, hparams_file=hparams_csv)
    assert model.hparams == {"hidden": 4, "learning_rate": 0.25, "activation": "gelu"}


def test_a_wrong_file_is_refused_saying_what_is_expected(tmp_path):
    ckpt, _ = train(tmp_path, LitModel())
    write(tmp_path / "hparams.json", "{}")
    with pytest.raises(pl.MisconfigurationError, match=r"\.yaml, \.yml or \.csv.*hparams\.json"):
        LitModel.load_from_checkpoint(ckpt, hparams_file=tmp_path / "hparams.json")
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        LitModel.load_from_checkpoint(ckpt, hparams_file=tmp_path / "nothere.yaml")
    write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(pl.MisconfigurationError, match="mapping.*list"):
        LitModel.load_from_checkpoint(ckpt, hparams_file=tmp_path / "list.yaml")


def test_without_pyyaml_json_files_still_load_and_yaml_ones_name_the_package(tmp_path, monkeypatch):
    ckpt, _ = train(tmp_path, LitModel())
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` now fails, as when PyYAML is missing
    as_json = tmp_path / "json.yaml"  # what ember's loggers write without PyYAML
    write(as_json, '{"learning_rate": 0.3}')
    assert LitModel.load_from_checkpoint(ckpt, hparams_file=as_json).hparams.learning_rate == 0.3
    as_yaml = tmp_path / "real.yaml"
    write(as_yaml, "learning_rate: 0.3\n")
    with pytest.raises(pl.MisconfigurationError, match="pip install pyyaml"):
        LitModel.load_from_checkpoint(ckpt, hparams_file=as_yaml)


# ----------------------------------------------------------------------------- hostile hparams files


def test_a_python_tag_in_hparams_yaml_is_refused_naming_the_file_and_the_fix(tmp_path):
    from ember.errors import MisconfigurationError
    from ember.core.saving import read_hparams_file

    path = tmp_path / "hparams.yaml"
    write(path, "hidden: !!python/object/apply:os.system ['echo owned']\n")
    with pytest.raises(MisconfigurationError,
                       match=r"hparams.yaml.*!!python/object/apply:os.system.*plain YAML values"):
        read_hparams_file(path)


def test_a_5000_deep_list_in_hparams_yaml_is_refused_naming_the_file(tmp_path):
    from ember.errors import MisconfigurationError
    from ember.core.saving import read_hparams_file

    path = tmp_path / "hparams.yaml"
    write(path, "hidden: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(MisconfigurationError, match=r"hparams.yaml.* nested too deeply"):
        read_hparams_file(path)


def test_a_tuple_lightning_wrote_as_a_python_tuple_tag_is_read_as_a_tuple(tmp_path):
    from ember.core.saving import read_hparams_file

    path = tmp_path / "hparams.yaml"
    write(path, yaml.dump({"sizes": (2, 3)}))  # as Lightning's save_hparams_to_yaml writes a tuple
    assert "!!python/tuple" in path.read_text()
    assert read_hparams_file(path) == {"sizes": (2, 3)}
