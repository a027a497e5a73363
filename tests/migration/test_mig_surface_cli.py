"""Mirrors the LightningCLI pages "Configure hyperparameters from the CLI" (basic/intermediate/advanced:
https://lightning.ai/docs/pytorch/stable/cli/lightning_cli_intermediate.html and
https://lightning.ai/docs/pytorch/stable/cli/lightning_cli_advanced.html): a main.py that is only
``cli = LightningCLI(Model, DataModule)``, run as a subprocess with ``fit --config config.yaml``,
command-line overrides, ``--print_config``, and a rerun from the saved ``lightning_logs/version_N/config.yaml``."""

from __future__ import annotations

import importlib.util
import os
import textwrap

import forkstart
import pytest
import yaml

MAIN = textwrap.dedent('''
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import ember as pl
    from ember.cli import LightningCLI


    class DemoModel(pl.LightningModule):
        def __init__(self, hidden: int = 4, learning_rate: float = 0.1):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)


    class DemoData:
        def __init__(self, batch_size: int = 8, size: int = 32):
            g = torch.Generator().manual_seed(0)
            self.data = TensorDataset(torch.randn(size, 8, generator=g), torch.randn(size, 1, generator=g))
            self.batch_size = batch_size

        def train_dataloader(self):
            return DataLoader(self.data, batch_size=self.batch_size)

        def val_dataloader(self):
            return DataLoader(self.data, batch_size=self.batch_size)


    if __name__ == "__main__":
        cli = LightningCLI(DemoModel, DemoData)
        print("epochs", cli.trainer.current_epoch, "hidden", cli.model.hparams.hidden)
''')

CONFIG = {
    "seed_everything": 42,
    "trainer": {"max_epochs": 2, "enable_progress_bar": False,
                "logger": {"class_path": "ember.loggers.CSVLogger", "init_args": {"save_dir": "."}},
                "callbacks": [{"class_path": "ember.callbacks.EarlyStopping", "init_args": {"monitor": "val_loss"}}]},
    "model": {"hidden": 6},
    "data": {"batch_size": 16},
}

MATRIX_SKIP = ("its program runs as a subprocess (main.py), out of the matrix's reach; the script itself runs under "
               "DDP and FSDP below (test_cli_script_runs_on_two_ranks)")



def run(cwd, *args):
    out = forkstart.run(["main.py", *args], cwd=cwd, timeout=120)  # as `python main.py ...` (a warm fork)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_cli_script_with_a_config_file_overrides_and_a_rerun_from_the_saved_config(tmp_path):
    (tmp_path / "main.py").write_text(MAIN)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))

    assert "epochs 3 hidden 6" in run(tmp_path, "fit", "--config", "config.yaml", "--trainer.max_epochs", "3")
    saved = yaml.safe_load((tmp_path / "lightning_logs/version_0/config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 3 and saved["model"]["hidden"] == 6 and saved["seed_everything"] == 42
    assert saved["data"]["batch_size"] == 16 and saved["trainer"]["callbacks"][0]["init_args"]["monitor"] == "val_loss"
    assert os.listdir(tmp_path / "lightning_logs/version_0/checkpoints") == ["epoch=2-step=6.ckpt"]

    assert "epochs 3 hidden 6" in run(tmp_path, "fit", "--config", "lightning_logs/version_0/config.yaml")
    rerun = yaml.safe_load((tmp_path / "lightning_logs/version_1/config.yaml").read_text())
    assert {k: v for k, v in rerun.items() if k != "trainer"} == {k: v for k, v in saved.items() if k != "trainer"}


def test_print_config_of_the_script_prints_the_merged_config_and_runs_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "main.py").write_text(MAIN)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("mig_surface_main", tmp_path / "main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)  # the script's classes, in this process (it runs nothing on import)
    with pytest.raises(SystemExit) as e:
        main.LightningCLI(main.DemoModel, main.DemoData,
                          args=["fit", "--config", "config.yaml", "--model.hidden", "3", "--print_config"])
    assert e.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["hidden"] == 3 and printed["trainer"]["max_epochs"] == 2
    assert not (tmp_path / "lightning_logs").exists()  # --print_config runs nothing


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_cli_script_runs_on_two_ranks(tmp_path, strategy):
    """The same main.py, given ``--trainer.strategy``/``--trainer.devices 2`` on the command line, starts its
    second rank itself; each rank trains on half the data (32 samples, batch 16: one step per epoch)."""
    (tmp_path / "main.py").write_text(MAIN)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    out = run(tmp_path, "fit", "--config", "config.yaml", "--trainer.strategy", strategy, "--trainer.devices", "2",
              "--trainer.accelerator", "cpu")
    assert out.count("epochs") == out.count("hidden") == 2  # each rank prints (the two lines may interleave)
    assert os.listdir(tmp_path / "lightning_logs") == ["version_0"]
    saved = yaml.safe_load((tmp_path / "lightning_logs/version_0/config.yaml").read_text())
    assert saved["trainer"]["strategy"] == strategy and saved["trainer"]["devices"] == 2
    assert os.listdir(tmp_path / "lightning_logs/version_0/checkpoints") == ["epoch=1-step=2.ckpt"]
