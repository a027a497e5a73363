"""LightningCLI: subcommands, --config, --print_config, --trainer.* / --model.* / --data.*, the saved config."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

import ember
from ember.callbacks import EarlyStopping, LearningRateMonitor
from ember.cli import LightningCLI
from tiny import TinyModel, make_loader


class Data:
    def __init__(self, n: int = 32, batch_size: int = 8):
        self.n, self.batch_size = n, batch_size

    def train_dataloader(self):
        return make_loader(n=self.n, batch_size=self.batch_size)

    def val_dataloader(self):
        return make_loader(n=16, shuffle=False)

    test_dataloader = val_dataloader

    def predict_dataloader(self):
        return [x for x, _ in make_loader(n=16, shuffle=False)]


def base(root, *more):
    return ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *more]


def test_fit_builds_everything_from_the_command_line_and_saves_the_config(tmp_path):
    cli = LightningCLI(TinyModel, Data, args=["fit", *base(tmp_path, "--trainer.max_epochs", "2",
                                              "--model.lr", "0.03", "--data.batch_size", "16")])
    assert cli.subcommand == "fit" and cli.trainer.current_epoch == 2 and cli.trainer.global_step == 4
    assert cli.model.hparams.lr == 0.03 and cli.datamodule.batch_size == 16
    saved = yaml.safe_load(open(tmp_path / "lightning_logs/version_0/config.yaml"))
    assert saved["model"]["lr"] == 0.03 and saved["trainer"]["max_epochs"] == 2 and saved["data"]["batch_size"] == 16
    assert isinstance(saved["seed_everything"], int)  # True picked a seed and recorded it


def test_a_config_file_is_read_and_the_command_line_overrides_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"trainer": {"max_epochs": 3, "logger": False}, "model": {"lr": 0.5},
                                   "seed_everything": 7}))
    cli = LightningCLI(TinyModel, Data,
                       args=["fit", "--config", str(cfg), *base(tmp_path, "--trainer.max_epochs", "1")])
    assert cli.trainer.current_epoch == 1 and cli.model.hparams.lr == 0.5 and cli.config["fit"]["seed_everything"] == 7
    assert (tmp_path / "config.yaml").exists()  # no logger: the root holds it


def test_the_same_seed_builds_the_same_model(tmp_path):
    models = [LightningCLI(TinyModel, Data, run=False, args=["--seed_everything", "3"]).model for _ in range(2)]
    assert torch.equal(models[0].net[0].weight, models[1].net[0].weight)


def test_print_config_prints_yaml_and_exits(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        LightningCLI(TinyModel, Data, args=["fit", "--print_config", "--model.lr", "0.2"])
    assert e.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["lr"] == 0.2 and "max_epochs" in printed["trainer"]


def test_callbacks_and_loggers_from_the_command_line_join_the_trainer_defaults(tmp_path):
    cli = LightningCLI(TinyModel, Data, trainer_defaults={"callbacks": [LearningRateMonitor()], "max_epochs": 1},
                       args=["fit", *base(tmp_path, "--trainer.callbacks+=EarlyStopping",
                                          "--trainer.callbacks.monitor=val_loss", "--trainer.logger+=CSVLogger",
                                          f"--trainer.logger.save_dir={tmp_path}")])
    kinds = {type(cb).__name__ for cb in cli.trainer.callbacks}
    assert {"EarlyStopping", "LearningRateMonitor", "SaveConfigCallback", "ModelCheckpoint"} <= kinds
    assert isinstance(cli.trainer.logger, ember.loggers.CSVLogger) and cli.trainer.current_epoch == 1
    assert (tmp_path / "lightning_logs/version_0/config.yaml").exists()
    assert any(isinstance(cb, EarlyStopping) and cb.monitor == "val_loss" for cb in cli.trainer.callbacks)


def test_any_module_subclass_can_be_chosen_by_class_path(tmp_path):
    cli = LightningCLI(args=["fit", *base(tmp_path, "--model=tiny.TinyModel", "--model.lr=0.2",
                                          "--trainer.max_epochs=1", "--trainer.logger=false")],
                       datamodule_class=Data)
    assert type(cli.model) is TinyModel and cli.model.hparams.lr == 0.2


def test_run_false_builds_the_objects_without_running(tmp_path):
    cli = LightningCLI(TinyModel, Data, run=False, args=base(tmp_path, "--trainer.max_epochs", "1"))
    assert cli.subcommand is None and cli.trainer.global_step == 0
    cli.trainer.fit(cli.model, cli.datamodule.train_dataloader())
    assert cli.trainer.global_step == 4 and (tmp_path / "lightning_logs/version_0/config.yaml").exists()


def test_an_existing_config_is_not_overwritten_unless_asked(tmp_path):
    args = ["fit", *base(tmp_path, "--trainer.max_epochs=1", "--trainer.logger+=CSVLogger",
                         f"--trainer.logger.save_dir={tmp_path}", "--trainer.logger.version=0")]
    LightningCLI(TinyModel, Data, args=args)
    with pytest.raises(RuntimeError, match=r"config.yaml to not exist.*'overwrite': True"):
        LightningCLI(TinyModel, Data, args=args)
    LightningCLI(TinyModel, Data, args=args, save_config_kwargs={"overwrite": True})
    LightningCLI(TinyModel, Data, args=args, save_config_callback=None)


class EvalModel(TinyModel):
    def test_step(self, batch, batch_idx):
        self.log("test_loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).argmax(1)


class EvalData(Data):
    def val_dataloader(self):
        return make_loader(n=self.n, batch_size=self.batch_size, shuffle=False)

    test_dataloader = predict_dataloader = val_dataloader


@pytest.mark.parametrize("sub, result", [("validate", "val_loss"), ("test", "test_loss"), ("predict", None)])
def test_evaluation_subcommands_load_the_checkpoint_and_run(tmp_path, sub, result):
    fitted = LightningCLI(EvalModel, EvalData, args=["fit", *base(tmp_path, "--trainer.max_epochs=1")])
    ckpt = fitted.trainer.checkpoint_callback.best_model_path
    cli = LightningCLI(EvalModel, EvalData, args=[sub, *base(tmp_path, "--trainer.logger=false"), "--ckpt_path", ckpt])
    assert cli.subcommand == sub and cli.trainer.ckpt_path == ckpt
    if result is not None:
        assert result in cli.trainer.callback_metrics


def test_the_cli_is_reachable_as_lightning_spells_it():
    import ember.cli

    assert ember.cli.LightningCLI is LightningCLI and ember.cli.SaveConfigCallback.__name__ == "SaveConfigCallback"


def test_without_jsonargparse_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonargparse", None)
    with pytest.raises(ModuleNotFoundError, match=r"ember-train\[cli\]"):
        LightningCLI(TinyModel, args=["fit"])


def test_parser_kwargs_reach_every_parser_or_one_subcommand(tmp_path):
    cfg = tmp_path / "defaults.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"lr": 0.7}, "trainer": {"max_epochs": 1}}))
    cli = LightningCLI(TinyModel, Data, run=False, parser_kwargs={"default_config_files": [str(cfg)]},
                       args=base(tmp_path))
    assert cli.model.hparams.lr == 0.7
    cli = LightningCLI(TinyModel, Data, parser_kwargs={"fit": {"default_config_files": [str(cfg)]}},
                       args=["fit", *base(tmp_path, "--trainer.logger=false")])
    assert cli.model.hparams.lr == 0.7 and cli.trainer.current_epoch == 1


# ----------------------------------------------------------------------------- configs are code: parity with Lightning


class _Untyped(TinyModel):
    def __init__(self, thing=None):
        super().__init__()
        self.thing = thing


def _untyped_under_lightning():
    import pytorch_lightning as real
    from pytorch_lightning.cli import LightningCLI as RealCLI

    class RealUntyped(real.LightningModule):
        def __init__(self, thing=None):
            super().__init__()
            self.thing = thing
    return RealCLI, RealUntyped


def test_an_untyped_argument_given_a_class_path_is_built_exactly_as_lightning_builds_it(tmp_path):
    """A config may name a class for an untyped __init__ argument, and Lightning 2.6.6 (jsonargparse 4.53)
    builds it; so does ember: a config file is as trusted as code (a harmless class stands in here for
    subprocess.Popen, which both build just the same)."""
    pytest.importorskip("pytorch_lightning")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"thing": {"class_path": "calendar.TextCalendar",
                                                          "init_args": {"firstweekday": 2}}}}))
    RealCLI, RealUntyped = _untyped_under_lightning()
    real = RealCLI(RealUntyped, args=["--config", str(config)], run=False, save_config_callback=None)
    ours = LightningCLI(_Untyped, args=["--config", str(config)], run=False, save_config_callback=None)
    assert type(real.model.thing).__name__ == type(ours.model.thing).__name__ == "TextCalendar"
    assert real.model.thing.firstweekday == ours.model.thing.firstweekday == 2
