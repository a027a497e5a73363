"""LightningCLI programs that run under Lightning run under ember: Lightning's printed configuration,
--optimizer/--lr_scheduler, --help text, CLI subclasses, and callbacks in a configuration."""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.cli import LightningCLI

pl = pytest.importorskip("pytorch_lightning")
pytest.importorskip("jsonargparse")


def make_model(lib):
    class Model(lib.LightningModule):
        def __init__(self, width: int = 4, lr: float = 0.1):
            """A small classifier.

            Args:
                width: input features
                lr: learning rate
            """
            super().__init__()
            self.layer = torch.nn.Linear(width, 2)
            self.lr = lr

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

        def train_dataloader(self):
            x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
            return DataLoader(TensorDataset(x, (x.sum(1) > 0).long()), batch_size=4)

        def val_dataloader(self):
            return self.train_dataloader()

    return Model


EmberModel = make_model(ember)
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.max_epochs=1"]


def lightning_printed_config(tmp_path, capsys) -> str:
    from pytorch_lightning.cli import LightningCLI as LightningsCLI

    with pytest.raises(SystemExit):
        LightningsCLI(make_model(pl), args=["fit", "--print_config"])
    text = capsys.readouterr().out
    path = tmp_path / "lightning.yaml"
    path.write_text(text)
    return str(path)


def test_a_config_printed_by_lightning_runs(tmp_path, capsys):
    config = lightning_printed_config(tmp_path, capsys)
    assert yaml.safe_load(open(config))["trainer"]["max_time"] is None  # what tripped ember before
    cli = LightningCLI(EmberModel, args=["fit", "--config", config, *QUIET, f"--trainer.default_root_dir={tmp_path}"])
    assert cli.trainer.global_step == 4
    assert (tmp_path / "lightning_logs/version_0/config.yaml").exists()


def test_optimizer_and_lr_scheduler_from_the_command_line(tmp_path):
    cli = LightningCLI(EmberModel, args=["fit", *QUIET, f"--trainer.default_root_dir={tmp_path}", "--optimizer=Adam",
                                         "--optimizer.lr=0.01", "--lr_scheduler=StepLR",
                                         "--lr_scheduler.step_size=2"])
    [opt] = cli.trainer.optimizers
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["initial_lr"] == 0.01
    [cfg] = cli.trainer.lr_scheduler_configs
    assert type(cfg.scheduler) is torch.optim.lr_scheduler.StepLR and cfg.scheduler.step_size == 2


def test_without_optimizer_arguments_the_model_configures_its_own(tmp_path):
    cli = LightningCLI(EmberModel, args=["fit", *QUIET, f"--trainer.default_root_dir={tmp_path}"])
    assert type(cli.trainer.optimizers[0]) is torch.optim.SGD


def test_help_documents_the_trainer_arguments(capsys):
    with pytest.raises(SystemExit):
        LightningCLI(EmberModel, args=["fit", "--help"])
    text = capsys.readouterr().out
    for name in ("max_epochs", "max_time", "overfit_batches", "log_every_n_steps", "accumulate_grad_batches"):
        found = re.search(rf"\n\s+--trainer\.{name} \S+\s+(.*?)\n\s+--", text, re.S)
        assert found and len(found.group(1).split()) > 4, f"--trainer.{name} has no help text"


def test_every_trainer_argument_is_documented():
    import inspect

    doc = inspect.getdoc(ember.Trainer.__init__)
    for name in inspect.signature(ember.Trainer.__init__).parameters:
        if name != "self":
            assert f"\n    {name}: " in doc, f"{name} is missing from the Trainer's Args section"


def test_model_checkpoint_in_a_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "ember.callbacks.ModelCheckpoint",
         "init_args": {"monitor": "val_loss", "save_top_k": 1, "dirpath": str(tmp_path / "best")}}]}}))
    cli = LightningCLI(EmberModel, args=["fit", "--config", str(config), *QUIET,
                                         f"--trainer.default_root_dir={tmp_path}"])
    assert cli.trainer.checkpoint_callback.monitor == "val_loss"
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["epoch=0-step=4.ckpt"]


class TunedCLI(LightningCLI):
    """A CLI subclass as Lightning's docs write them."""

    def add_arguments_to_parser(self, parser):
        parser.add_lightning_class_args(ember.callbacks.EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val_loss", "early_stopping.patience": 3})
        parser.add_argument("--width", type=int, default=4)
        parser.link_arguments("width", "model.width")


def test_cli_subclass_adds_callbacks_links_and_defaults(tmp_path):
    cli = TunedCLI(EmberModel, args=["fit", *QUIET, f"--trainer.default_root_dir={tmp_path}", "--width=4"])
    [stopper] = [cb for cb in cli.trainer.callbacks if isinstance(cb, ember.callbacks.EarlyStopping)]
    assert (stopper.monitor, stopper.patience) == ("val_loss", 3)
    assert cli.model.layer.in_features == 4
