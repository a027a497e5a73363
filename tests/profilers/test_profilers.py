"""Profilers: Trainer(profiler=...) records Lightning's action names; reports go to a file or stdout."""

from __future__ import annotations

import pstats

import pytest

import ember
from ember.errors import MisconfigurationError
from ember.loops.hooks import Hooks
from ember.profilers import AdvancedProfiler, PassThroughProfiler, PyTorchProfiler, SimpleProfiler
from tiny import TinyModel, make_loader, trainer_kwargs


class Probe(ember.callbacks.Callback):
    def on_train_epoch_start(self, trainer, module):
        pass


def fit(tmp_path, profiler, **kw):
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=False, profiler=profiler,
                                             callbacks=[Probe()], **kw))
    trainer.fit(TinyModel(), make_loader(n=16), make_loader(n=8))
    return trainer


def test_simple_profiler_records_lightnings_action_names(tmp_path):
    profiler = SimpleProfiler()
    fit(tmp_path, profiler)
    calls = {k: len(v) for k, v in profiler.recorded_durations.items()}
    assert calls["run_training_epoch"] == 1
    assert calls["run_training_batch"] == 2
    assert calls["[Strategy]SingleDeviceStrategy.training_step"] == 2
    assert calls["[Strategy]SingleDeviceStrategy.backward"] == 2
    assert calls["[LightningModule]TinyModel.optimizer_step"] == 2
    assert calls["[_TrainingEpochLoop].train_dataloader_next"] == 2
    assert calls["[Strategy]SingleDeviceStrategy.validation_step"] == 1 + 1  # sanity check + the epoch's
    assert calls["[Callback]Probe.on_train_epoch_start"] == 1


def test_simple_profiler_writes_its_report_to_dirpath_stage_filename(tmp_path):
    fit(tmp_path, SimpleProfiler(dirpath=tmp_path / "prof", filename="perf"))
    report = (tmp_path / "prof" / "fit-perf.txt").read_text()
    assert "FIT Profiler Report" in report and "run_training_batch" in report and "Percentage %" in report


def test_profiler_report_is_printed_without_a_filename(tmp_path, capsys):
    fit(tmp_path, "simple")
    assert "FIT Profiler Report" in capsys.readouterr().out


def test_profiler_string_names_build_lightnings_profilers(tmp_path):
    assert isinstance(ember.Trainer(profiler="simple").profiler, SimpleProfiler)
    assert isinstance(ember.Trainer(profiler="advanced").profiler, AdvancedProfiler)
    assert isinstance(ember.Trainer(profiler="pytorch").profiler, PyTorchProfiler)
    assert isinstance(ember.Trainer().profiler, PassThroughProfiler)


def test_unknown_profiler_name_is_refused():
    with pytest.raises(MisconfigurationError, match="profiler must be None, one of \\['advanced', 'pytorch', "
                                                    "'simple'\\]"):
        ember.Trainer(profiler="fast")


def test_without_a_profiler_the_loop_is_not_instrumented(tmp_path):
    trainer = fit(tmp_path, None)
    assert type(trainer._hooks) is Hooks
    assert "train_step" not in vars(trainer.fit_loop) and trainer.fit_loop.parts.training_step is None


def test_advanced_profiler_reports_cprofile_stats_and_dumps_them(tmp_path):
    profiler = AdvancedProfiler(dirpath=tmp_path / "adv", filename="perf", dump_stats=True)
    fit(tmp_path, profiler)
    report = (tmp_path / "adv" / "fit-perf.txt").read_text()
    assert "Profile stats for: run_training_batch" in report and "function calls" in report
    dumped = tmp_path / "adv" / "fit-perf-run_training_batch.prof"
    assert pstats.Stats(str(dumped)).total_calls > 0


def test_pytorch_profiler_reports_operators_and_exports_a_chrome_trace(tmp_path):
    fit(tmp_path, PyTorchProfiler(dirpath=tmp_path / "pt", filename="perf", row_limit=-1))  # every row: on a
    report = (tmp_path / "pt" / "fit-perf.txt").read_text()
    assert "aten::addmm" in report or "aten::linear" in report  # loaded machine the top 20 may be other ops
    assert (tmp_path / "pt" / "fit-perf.pt.trace.json").stat().st_size > 0


def test_profile_context_manager_records_one_call():
    profiler = SimpleProfiler()
    with profiler.profile("load"):
        pass
    assert len(profiler.recorded_durations["load"]) == 1


def test_stopping_an_action_never_started_is_an_error():
    with pytest.raises(ValueError, match="never started"):
        SimpleProfiler().stop("x")


def test_validate_is_profiled_as_its_own_stage(tmp_path):
    profiler = SimpleProfiler(dirpath=tmp_path, filename="p")
    ember.Trainer(**trainer_kwargs(tmp_path, profiler=profiler)).validate(TinyModel(), make_loader(n=8))
    assert "VALIDATE Profiler Report" in (tmp_path / "validate-p.txt").read_text()
