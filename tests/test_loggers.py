"""Loggers with Lightning's names and folder layout: CSVLogger, TensorBoardLogger, Trainer(logger=...)."""

from __future__ import annotations

import csv
import sys

import pytest
import torch
import yaml

import ember
from ember.checkpoint.storage.locations import open_store
from ember.errors import MisconfigurationError
from ember.loggers import CSVLogger, Logger, TensorBoardLogger
from tiny import TinyModel, make_loader


def fit(root, logger, epochs=2, **kw):
    trainer = ember.Trainer(default_root_dir=str(root), max_epochs=epochs, enable_progress_bar=False,
                            logger=logger, log_every_n_steps=1, **kw)
    trainer.fit(TinyModel(lr=0.05), make_loader(), make_loader(n=16, shuffle=False))
    return trainer


def rel(root, pattern):
    return sorted(str(p.relative_to(root)) for p in root.rglob(pattern))


def test_csv_logger_uses_lightnings_layout_with_hparams_and_checkpoints_in_the_version_folder(tmp_path):
    fit(tmp_path, CSVLogger(tmp_path))
    run = tmp_path / "lightning_logs/version_0"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert list(rows[0])[:2] == ["epoch", "step"]
    assert len([r for r in rows if r["val_loss"]]) == 2 and len([r for r in rows if r["train_loss"]]) == 8
    assert yaml.safe_load(open(run / "hparams.yaml"))["lr"] == 0.05
    assert rel(tmp_path, "*.ckpt") == ["lightning_logs/version_0/checkpoints/epoch=1-step=8.ckpt"]


def test_a_second_run_takes_the_next_version(tmp_path):
    fit(tmp_path, CSVLogger(tmp_path, name="exp"), epochs=1)
    trainer = fit(tmp_path, CSVLogger(tmp_path, name="exp"), epochs=1)
    assert trainer.logger.version == 1
    assert (tmp_path / "exp/version_1/metrics.csv").exists()
    assert trainer.checkpoint_callback.best_model_path.startswith(str(tmp_path / "exp/version_1/checkpoints"))


def test_the_default_logger_is_lightnings_tensorboard_logger_in_lightning_logs(tmp_path):
    trainer = fit(tmp_path, True, epochs=1)
    assert isinstance(trainer.logger, TensorBoardLogger) and trainer.loggers == [trainer.logger]
    assert type(trainer.logger.experiment).__name__ == "SummaryWriter"  # callbacks call add_image etc. on it
    assert (tmp_path / "lightning_logs/version_0/hparams.yaml").exists()
    assert rel(tmp_path, "*.ckpt") == ["lightning_logs/version_0/checkpoints/epoch=0-step=4.ckpt"]


def test_without_tensorboard_the_default_logger_is_a_csv_logger_in_lightning_logs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    trainer = fit(tmp_path, True, epochs=1)
    assert isinstance(trainer.logger, CSVLogger)
    assert (tmp_path / "lightning_logs/version_0/metrics.csv").exists()
    assert rel(tmp_path, "*.ckpt") == ["lightning_logs/version_0/checkpoints/epoch=0-step=4.ckpt"]


def test_without_loggers_checkpoints_go_to_the_root(tmp_path):
    fit(tmp_path, False, epochs=1)
    assert rel(tmp_path, "*.ckpt") == ["checkpoints/epoch=0-step=4.ckpt"]


def test_the_default_checkpoint_folder_is_lightnings(tmp_path):
    """The same run under real Lightning and ember leaves its checkpoint at the same relative path."""
    pl = pytest.importorskip("pytorch_lightning")
    import warnings

    from parity import classifier, loader

    found = []
    for lib, kw in ((pl, {"accelerator": "cpu", "devices": 1}), (ember, {})):
        root = tmp_path / lib.__name__
        trainer = lib.Trainer(default_root_dir=str(root), max_epochs=1, enable_progress_bar=False,
                              enable_model_summary=False, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(classifier(lib), loader())
        found.append((rel(root, "*.ckpt"), type(trainer.logger).__name__))
    assert found[0] == found[1] == (["lightning_logs/version_0/checkpoints/epoch=0-step=3.ckpt"], "TensorBoardLogger")


def test_csv_logger_writes_through_storage_urls(tmp_path):
    lg = CSVLogger("memory://surface-csv", name="runs", version=3, prefix="train", flush_logs_every_n_steps=2)
    lg.log_metrics({"loss": 1.5}, step=0)
    assert open_store("memory://surface-csv/runs").list("version_3") == []  # one row: not flushed yet
    lg.log_metrics({"loss": 1.25}, step=1)
    with open_store("memory://surface-csv/runs").open_read("version_3/metrics.csv") as (f, _):
        rows = list(csv.DictReader(f.read().decode().splitlines()))
    assert [r["train-loss"] for r in rows] == ["1.5", "1.25"]
    assert lg.log_dir == "memory://surface-csv/runs/version_3"


def test_tensorboard_logger_writes_scalars_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lg = TensorBoardLogger(tmp_path)
    trainer = fit(tmp_path, lg)
    assert lg.log_dir == str(tmp_path / "lightning_logs/version_0")
    assert type(lg.experiment).__name__ == "SummaryWriter"
    events = EventAccumulator(lg.log_dir)
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train_loss", "val_loss", "epoch", "hp_metric"} <= set(tags)
    assert [e.step for e in events.Scalars("val_loss")] == [3, 7]  # Lightning's numbering
    assert yaml.safe_load(open(tmp_path / "lightning_logs/version_0/hparams.yaml"))["lr"] == 0.05
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / "lightning_logs/version_0/checkpoints")


def test_tensorboard_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match=r"ember-train\[tensorboard\]"):
        TensorBoardLogger(tmp_path)


def test_several_loggers_all_receive_metrics_and_the_module_sees_them(tmp_path):
    seen = {}

    class Peek(TinyModel):
        def on_train_start(self):
            seen["logger"], seen["loggers"] = self.logger, self.loggers

    a, b = CSVLogger(tmp_path, name="a"), CSVLogger(tmp_path, name="b")
    trainer = ember.Trainer(default_root_dir=str(tmp_path), max_epochs=1, enable_progress_bar=False, logger=[a, b],
                            log_every_n_steps=1)
    trainer.fit(Peek(), make_loader())
    assert trainer.logger is a and seen["logger"] is a and seen["loggers"] == [a, b]
    assert (tmp_path / "a/version_0/metrics.csv").exists() and (tmp_path / "b/version_0/metrics.csv").exists()
    assert rel(tmp_path, "*.ckpt") == ["a/version_0/checkpoints/epoch=0-step=4.ckpt"]


def test_a_custom_logger_subclass_gets_hparams_metrics_and_finalize(tmp_path):
    class Recorder(Logger):
        def __init__(self):
            self.calls = []

        def log_hyperparams(self, params, *args, **kwargs):
            self.calls.append(("hparams", dict(params)))

        def log_metrics(self, metrics, step=None):
            self.calls.append(("metrics", step, dict(metrics)))

        def finalize(self, status):
            self.calls.append(("finalize", status))

    rec = Recorder()
    fit(tmp_path, rec, epochs=1, enable_checkpointing=False)
    assert rec.calls[0] == ("hparams", {"in_dim": 4, "out_dim": 2, "lr": 0.05, "scheduler": None})
    assert rec.calls[-1] == ("finalize", "success")
    metric_calls = [c for c in rec.calls if c[0] == "metrics"]
    assert metric_calls[0][1] == 0 and metric_calls[0][2]["epoch"] == 0  # Lightning's first logged step is 0


def test_a_failed_fit_finalizes_with_failed(tmp_path):
    class Recorder(CSVLogger):
        status = None

        def finalize(self, status):
            Recorder.status = status

    class Boom(TinyModel):
        def training_step(self, batch, batch_idx):
            raise ValueError("boom")

    trainer = ember.Trainer(default_root_dir=str(tmp_path), max_epochs=1, enable_progress_bar=False,
                            logger=Recorder(tmp_path), enable_checkpointing=False)
    with pytest.raises(ValueError, match="boom"):
        trainer.fit(Boom(), make_loader())
    assert Recorder.status == "failed"


def test_a_logger_that_is_not_one_is_refused(tmp_path):
    with pytest.raises(MisconfigurationError, match="logger must be True, False, an ember.loggers.Logger"):
        ember.Trainer(default_root_dir=str(tmp_path), logger="csv")


def test_trainer_logger_setter_replaces_the_loggers(tmp_path):
    trainer = ember.Trainer(default_root_dir=str(tmp_path), logger=False)
    assert trainer.logger is None and trainer.loggers == [] and trainer.log_dir == str(tmp_path)
    lg = CSVLogger(tmp_path)
    trainer.logger = lg
    assert trainer.loggers == [lg] and trainer.log_dir == f"{tmp_path}/lightning_logs/version_0"


def test_tensorboard_log_graph_records_the_model_graph_at_fit_start(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class WithExample(TinyModel):
        def __init__(self):
            super().__init__()
            self.example_input_array = torch.zeros(2, 4)

    lg = TensorBoardLogger(tmp_path, log_graph=True)
    ember.Trainer(default_root_dir=str(tmp_path), max_epochs=1, enable_progress_bar=False, logger=lg,
                  enable_checkpointing=False).fit(WithExample(), make_loader())
    events = EventAccumulator(lg.log_dir)
    events.Reload()
    assert events.Graph() is not None
    with pytest.raises(ValueError, match="log_graph=True needs an input"):
        TensorBoardLogger(tmp_path, log_graph=True).log_graph(TinyModel())


def test_last_resumes_from_the_previous_version_folder(tmp_path):
    """A new process gets a new version folder (Lightning's layout); ckpt_path='last' still finds the run it
    replaces, in the newest earlier version that holds a checkpoint."""
    first = fit(tmp_path, True, epochs=1)
    assert first.logger.version == 0
    trainer = ember.Trainer(default_root_dir=str(tmp_path), max_epochs=2, enable_progress_bar=False)
    trainer.fit(TinyModel(), make_loader(), ckpt_path="last")
    assert trainer.logger.version == 1
    assert trainer.ckpt_path == str(tmp_path / "lightning_logs/version_0/checkpoints/epoch=0-step=4.ckpt")
    assert trainer.global_step == 8
