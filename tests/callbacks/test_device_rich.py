"""DeviceStatsMonitor (CPU statistics with or without psutil), RichModelSummary and RichProgressBar."""

from __future__ import annotations

import importlib.util

import pytest

import ember
from ember.callbacks import DeviceStatsMonitor, RichModelSummary, RichProgressBar
from ember.callbacks import device_stats_monitor, rich_model_summary
from ember.errors import MisconfigurationError
from ember.loggers import CSVLogger
from tiny import TinyModel, make_loader, trainer_kwargs


class Recording(CSVLogger):
    def __init__(self, root):
        super().__init__(root)
        self.rows = []

    def log_metrics(self, metrics, step=None):
        self.rows.append((dict(metrics), step))
        super().log_metrics(metrics, step)


def test_device_stats_monitor_logs_cpu_stats_before_and_after_each_batch(tmp_path):
    logger = Recording(tmp_path)
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1,
                                             enable_checkpointing=False, callbacks=[DeviceStatsMonitor()]))
    trainer.fit(TinyModel(), make_loader(n=16))
    keys = {k for row, _ in logger.rows for k in row}
    for hook in ("on_train_batch_start", "on_train_batch_end"):
        for stat in ("cpu_vm_percent", "cpu_percent", "cpu_swap_percent"):
            assert f"DeviceStatsMonitor.{hook}/{stat}" in keys
    values = [v for row, _ in logger.rows for k, v in row.items() if k.endswith("cpu_vm_percent")]
    assert all(0 < v <= 100 for v in values)


@pytest.mark.skipif(importlib.util.find_spec("psutil") is not None, reason="psutil installed: it is used")
def test_without_psutil_cpu_stats_come_from_proc():
    stats = device_stats_monitor.cpu_stats(device_stats_monitor._ProcCpu())
    assert set(stats) == {"cpu_vm_percent", "cpu_percent", "cpu_swap_percent"}


def test_device_stats_monitor_needs_a_logger(tmp_path):
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[DeviceStatsMonitor()]))
    with pytest.raises(MisconfigurationError, match="has none \\(logger=False\\)"):
        trainer.fit(TinyModel(), make_loader())


def test_rich_callbacks_without_rich_say_how_to_install_it(monkeypatch):
    monkeypatch.setattr(rich_model_summary.importlib.util, "find_spec",
                        lambda name: None if name == "rich" else importlib.util.find_spec(name))
    with pytest.raises(ImportError, match="pip install rich"):
        RichProgressBar()
    with pytest.raises(ImportError, match="pip install rich"):
        RichModelSummary()


needs_rich = pytest.mark.skipif(importlib.util.find_spec("rich") is None, reason="rich is not installed")


@needs_rich
def test_rich_model_summary_prints_a_table_of_the_layers(tmp_path, capsys):
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=False,
                                             callbacks=[RichModelSummary()]))
    trainer.fit(TinyModel(), make_loader(n=8))
    out = capsys.readouterr().out
    assert "Sequential" in out and "Total params" in out and "23" in out  # 4*3+3 + 3*2+2 parameters


@needs_rich
def test_rich_progress_bar_shows_each_epoch_with_its_metrics(tmp_path):
    bar = RichProgressBar(refresh_rate=1, leave=True,
                          console_kwargs={"file": open(tmp_path / "bar.txt", "w"), "width": 120,
                                                      "force_terminal": False})
    trainer = ember.Trainer(default_root_dir=str(tmp_path), logger=False, max_epochs=2, enable_checkpointing=False,
                            callbacks=[bar])
    trainer.fit(TinyModel(), make_loader(n=16))
    assert isinstance(bar, RichProgressBar) and trainer.progress_bar_callback is bar
    text = (tmp_path / "bar.txt").read_text()
    assert "Epoch 0" in text and "Epoch 1" in text and "2/2" in text and "loss" in text
