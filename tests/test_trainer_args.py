"""Trainer arguments: unknown names refused by name, fast_dev_run, min_epochs/min_steps, backend flags."""

from __future__ import annotations

import pytest
import torch

import ember
from ember.callbacks import Callback
from tiny import TinyModel, make_loader, trainer_kwargs


@pytest.mark.parametrize("kwargs, message", [
    ({"plugins": ["x"]}, r"Lightning's Trainer has \['plugins'\] but ember does not implement it yet"),
    ({"max_time": "01:00"}, r"Expected a string in the format DD:HH:MM:SS"),
    ({"overfit_batches": 1.5}, r"overfit_batches must be an int >= 0"),
    ({"max_epoch": 3}, r"\['max_epoch'\] is not a Trainer argument"),
    ({"gpus": 1}, r"Lightning 2.x removed gpus \(use accelerator='gpu', devices=N\)"),
    ({"profiler": "xla"}, "profiler=.xla. profiles TPUs"),
    ({"fast_dev_run": -1}, "fast_dev_run must be a bool or an int"),
    ({"num_sanity_val_steps": -2}, "num_sanity_val_steps must be"),
    ({"min_epochs": 1.5}, "min_epochs must be"),
    ({"deterministic": "yes"}, "deterministic must be"),
])
def test_unsupported_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ember.MisconfigurationError, match=message):
        ember.Trainer(**kwargs)


def test_lightning_defaults_of_unimplemented_arguments_are_accepted():
    t = ember.Trainer(max_time=None, overfit_batches=0.0, sync_batchnorm=False, devices=1, strategy="auto",
                      num_nodes=1, accelerator="cpu")
    assert (t.devices, t.num_nodes, t.accelerator, t.world_size) == (1, 1, "cpu", 1)
    assert type(t.strategy).__name__ == "SingleDeviceStrategy"  # one process


def test_a_one_process_run_has_a_strategy_object_with_lightnings_common_names():
    t = ember.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    s = t.strategy
    assert (s.root_device, s.world_size, s.global_rank, s.local_rank, s.node_rank, s.is_global_zero) == (
        torch.device("cpu"), 1, 0, 0, 0, True)
    assert s.barrier("name") is None and s.broadcast({"a": 1}) == {"a": 1}
    assert torch.equal(s.reduce(torch.tensor(3), reduce_op="sum"), torch.tensor(3))
    assert (t.num_devices, t.num_nodes, t.node_rank, t.device_ids) == (1, 1, 0, [0])


def test_strategy_reduce_refuses_an_unknown_op():
    with pytest.raises(ember.MisconfigurationError,
                       match=r"reduce op must be one of \['mean', 'sum', 'max', 'min'\] \(or 'avg'\); "
                             r"received op='median'"):
        ember.Trainer(accelerator="cpu", logger=False).strategy.reduce(1.0, "median")


def test_fast_dev_run_runs_n_batches_of_each_stage_without_checkpoints_or_logs(tmp_path):
    seen = []

    class M(TinyModel):
        def validation_step(self, batch, batch_idx):
            seen.append(batch_idx)
            super().validation_step(batch, batch_idx)

        def predict_step(self, batch, batch_idx):
            return self(batch[0])

    t = ember.Trainer(fast_dev_run=2, default_root_dir=str(tmp_path), enable_progress_bar=False, max_epochs=5)
    t.fit(M(), make_loader(), make_loader())
    assert t.global_step == 2 and seen == [0, 1] and t.logger is None
    assert list(tmp_path.iterdir()) == []
    assert len(t.predict(M(), make_loader())) == 2


def test_min_epochs_and_min_steps_hold_back_a_stop_request(tmp_path):
    class StopAtOnce(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            trainer.should_stop = True

    t = ember.Trainer(min_epochs=2, max_epochs=5, callbacks=[StopAtOnce()], **trainer_kwargs(tmp_path))
    t.fit(TinyModel(), make_loader())
    assert t.current_epoch == 2 and t.global_step == 8  # the stop waited until two epochs were done
    t = ember.Trainer(min_steps=3, max_epochs=5, callbacks=[StopAtOnce()], **trainer_kwargs(tmp_path))
    t.fit(TinyModel(), make_loader())
    assert t.global_step == 3


def test_inference_mode_and_detect_anomaly(tmp_path):
    modes = []

    class M(TinyModel):
        def training_step(self, batch, batch_idx):
            modes.append(("anomaly", torch.is_anomaly_enabled()))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            modes.append(("inference", torch.is_inference_mode_enabled(), torch.is_grad_enabled()))

    ember.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0, detect_anomaly=True,
                  **trainer_kwargs(tmp_path)).fit(M(), make_loader(), make_loader())
    ember.Trainer(inference_mode=False, **trainer_kwargs(tmp_path)).validate(M(), make_loader(n=8), verbose=False)
    # fit's validation runs under no_grad whatever inference_mode says (as Lightning's); validate follows it
    assert modes == [("anomaly", True), ("inference", False, False), ("inference", False, False)]
    assert not torch.is_anomaly_enabled()


def test_deterministic_and_benchmark_set_the_torch_flags():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    try:
        ember.Trainer(deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        ember.Trainer(deterministic=False, benchmark=True)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def test_model_summary_is_logged_at_fit_start(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="ember"):
        ember.Trainer(max_steps=1, **trainer_kwargs(tmp_path, checkpoint_callback=False)).fit(TinyModel(),
                                                                                               make_loader())
    assert "Sequential" in caplog.text and "Total params" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ember"):
        ember.Trainer(max_steps=1, enable_model_summary=False,
                      **trainer_kwargs(tmp_path, checkpoint_callback=False)).fit(TinyModel(), make_loader())
    assert "Total params" not in caplog.text
