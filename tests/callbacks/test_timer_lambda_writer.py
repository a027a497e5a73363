"""Timer, LambdaCallback, BasePredictionWriter, GradientAccumulationScheduler and EarlyStoppingReason."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import torch

import ember
from ember.callbacks import (BasePredictionWriter, EarlyStopping, EarlyStoppingReason, GradientAccumulationScheduler,
                             LambdaCallback, ModelCheckpoint, Timer)
from ember.callbacks.timer import parse_duration
from ember.errors import MisconfigurationError
from tiny import TinyModel, make_loader, trainer_kwargs


class Slow(TinyModel):
    def training_step(self, batch, batch_idx):
        time.sleep(0.02)
        return super().training_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).argmax(-1)


@pytest.mark.parametrize("given, seconds", [("00:01:02:03", 3723), ({"minutes": 2}, 120),
                                            (timedelta(seconds=5), 5)])
def test_timer_reads_lightnings_duration_forms(given, seconds):
    assert parse_duration(given).total_seconds() == seconds


def test_timer_refuses_a_malformed_duration():
    with pytest.raises(MisconfigurationError, match="format DD:HH:MM:SS"):
        Timer(duration="1 hour")


def test_timer_stops_training_once_the_duration_has_passed(tmp_path):
    timer = Timer(duration=timedelta(seconds=0.1), verbose=False)
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1000, enable_checkpointing=False,
                                             callbacks=[timer]))
    trainer.fit(Slow(), make_loader())
    assert trainer.should_stop and trainer.current_epoch < 1000
    assert timer.time_elapsed("train") >= 0.1
    assert timer.time_remaining() <= 0


def test_timer_measures_each_stage(tmp_path):
    timer = Timer()
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=False, callbacks=[timer]))
    trainer.fit(Slow(), make_loader(), make_loader())
    assert timer.time_elapsed("train") > 0 and timer.time_elapsed("validate") > 0
    assert timer.start_time("test") is None and timer.time_remaining() is None


def test_timer_counts_the_time_before_a_resume(tmp_path):
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[Timer(), ck])).fit(Slow(), make_loader())
    saved = ember.load_checkpoint(tmp_path / "ck" / "last.ckpt")["callbacks"]["Timer"]["time_elapsed"]["train"]
    assert saved > 0
    timer = Timer(duration=timedelta(seconds=saved / 2), verbose=False)  # already past: no training at all
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=5, enable_checkpointing=False, callbacks=[timer]))
    trainer.fit(Slow(), make_loader(), ckpt_path=tmp_path / "ck" / "last.ckpt")
    assert trainer.current_epoch == 1 and timer.time_elapsed() >= saved


def test_lambda_callback_runs_the_given_functions_with_the_hook_arguments(tmp_path):
    seen = []
    cb = LambdaCallback(on_train_epoch_end=lambda trainer, module: seen.append(("epoch", trainer.current_epoch)),
                        on_train_batch_end=lambda trainer, module, out, batch, idx: seen.append(idx))
    ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=False, callbacks=[cb])).fit(
        TinyModel(), make_loader())
    assert seen == [0, 1, 2, 3, ("epoch", 0)]


def test_lambda_callback_refuses_an_unknown_hook():
    with pytest.raises(MisconfigurationError, match="unknown hooks \\['on_trian_start'\\]"):
        LambdaCallback(on_trian_start=print)


class Writer(BasePredictionWriter):
    def __init__(self, interval):
        super().__init__(interval)
        self.batches, self.epochs = [], []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        self.batches.append((batch_idx, batch_indices, prediction.shape[0]))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        self.epochs.append((len(predictions), batch_indices))


def test_prediction_writer_writes_each_batch_with_its_dataset_indices(tmp_path):
    w = Writer("batch")
    ember.Trainer(**trainer_kwargs(tmp_path, callbacks=[w])).predict(Slow(), make_loader(n=10, batch_size=4,
                                                                                        shuffle=False))
    assert w.batches == [(0, [0, 1, 2, 3], 4), (1, [4, 5, 6, 7], 4), (2, [8, 9], 2)] and w.epochs == []


def test_prediction_writer_indices_follow_a_shuffling_loader(tmp_path):
    w = Writer("batch")
    loader = make_loader(n=10, batch_size=5, shuffle=True)
    model = Slow()
    torch.manual_seed(3)
    out = ember.Trainer(**trainer_kwargs(tmp_path, callbacks=[w])).predict(model, loader)
    x = loader.dataset.tensors[0]
    for (_, indices, _), pred in zip(w.batches, out):
        assert torch.equal(model(x[indices]).argmax(-1), pred)


def test_prediction_writer_on_epoch_end_gets_every_prediction(tmp_path):
    w = Writer("epoch")
    ember.Trainer(**trainer_kwargs(tmp_path, callbacks=[w])).predict(Slow(), make_loader(n=10, batch_size=4,
                                                                                        shuffle=False))
    assert w.batches == [] and w.epochs == [(3, [[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]])]


def test_prediction_writer_refuses_an_unknown_interval():
    with pytest.raises(MisconfigurationError, match="write_interval must be one of"):
        BasePredictionWriter("step")


def test_gradient_accumulation_scheduler_refuses_a_trainer_accumulating_too(tmp_path):
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, accumulate_grad_batches=2,
                                             callbacks=[GradientAccumulationScheduler({0: 2})]))
    with pytest.raises(MisconfigurationError, match="pass the schedule only"):
        trainer.fit(TinyModel(), make_loader())


def test_gradient_accumulation_scheduler_checks_its_schedule():
    with pytest.raises(MisconfigurationError, match="values must be ints >= 1"):
        GradientAccumulationScheduler({0: 0})


def test_early_stopping_names_its_reason(tmp_path):
    es = EarlyStopping(monitor="train_loss", stopping_threshold=10.0)
    assert es.stopping_reason is EarlyStoppingReason.NOT_STOPPED
    ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=5, enable_checkpointing=False, callbacks=[es])).fit(
        TinyModel(), make_loader())
    assert es.stopping_reason is EarlyStoppingReason.STOPPING_THRESHOLD


def test_on_gpu_is_false_for_a_module_on_cpu():
    assert TinyModel().on_gpu is False
