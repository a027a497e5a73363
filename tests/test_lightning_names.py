"""The plain Lightning names ember added for issue 18: each does what Lightning's does (compared with the
installed pytorch_lightning where the function is pure)."""

from __future__ import annotations

import argparse
import random

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.errors import MisconfigurationError

pl = pytest.importorskip("pytorch_lightning")


class Tiny(ember.LightningModule):
    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.fail_at = fail_at
        self.stages = []

    def training_step(self, batch, batch_idx):
        self.stages.append((str(self.trainer.state.fn), str(self.trainer.state.stage), str(self.trainer.state.status)))
        if batch_idx == self.fail_at:
            raise RuntimeError("boom")
        return self.layer(batch[0]).sum()

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    return DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)


def _trainer(tmp_path, **kw):
    return ember.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, **kw)


def test_misconfiguration_exception_is_embers_misconfiguration_error():
    from ember.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="fast_dev_run must be"):
        ember.Trainer(fast_dev_run=-1, logger=False)
    assert MisconfigurationException is MisconfigurationError


@pytest.mark.parametrize("text", ["norm", "NORM", "Norm"])
def test_grad_clip_algorithm_type_equals_its_value_in_any_case_like_lightnings(text):
    from ember.utilities.enums import GradClipAlgorithmType

    assert (GradClipAlgorithmType.NORM == text) == (pl.utilities.GradClipAlgorithmType.NORM == text)
    assert GradClipAlgorithmType.supported_types() == pl.utilities.GradClipAlgorithmType.supported_types()


def test_trainer_state_runs_through_initializing_running_finished(tmp_path):
    trainer, model = _trainer(tmp_path), Tiny()
    assert trainer.state.status == "initializing" and trainer.state.fn is None
    trainer.fit(model, _loader())
    assert model.stages[0] == ("fit", "train", "running")
    assert (trainer.state.status, trainer.state.fn, trainer.state.stage) == ("finished", "fit", None)
    trainer.test(model, _loader(), verbose=False)
    assert trainer.state.fn == "test" and trainer.state.finished


def test_trainer_state_is_interrupted_after_fit_raises(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Tiny(fail_at=1), _loader())
    assert trainer.interrupted and trainer.state.stopped and not trainer.state.finished


def test_trainer_counts_batches_of_the_loaders_it_ran(tmp_path):
    trainer, model = _trainer(tmp_path, limit_test_batches=1), Tiny()
    trainer.test(model, [_loader(), _loader()], verbose=False)
    assert trainer.num_test_batches == [1, 1]
    assert len(trainer.test_dataloaders) == 2


def test_trainer_takes_accelerator_objects_and_single_device_strategy(tmp_path):
    from ember.accelerators import CPUAccelerator
    from ember.strategies import SingleDeviceStrategy

    assert _trainer(tmp_path, accelerator=CPUAccelerator()).device == torch.device("cpu")
    assert _trainer(tmp_path, strategy=SingleDeviceStrategy("cpu")).device == torch.device("cpu")


def test_embers_parallel_strategies_are_strategies():
    from ember.strategies import DDPStrategy, Strategy

    assert isinstance(DDPStrategy(accelerator="cpu"), Strategy)


def test_is_overridden_tells_a_subclass_hook_from_the_base():
    from ember.utilities.model_helpers import is_overridden

    class Hooked(ember.Callback):
        def on_train_start(self, trainer, module):
            pass

    assert is_overridden("on_train_start", Hooked())
    assert not is_overridden("on_train_end", Hooked())
    assert is_overridden("training_step", Tiny()) and not is_overridden("validation_step", Tiny())


def test_hparams_yaml_round_trips_through_save_and_load(tmp_path):
    from ember.core.saving import load_hparams_from_yaml, save_hparams_to_yaml

    path = tmp_path / "hparams.yaml"
    save_hparams_to_yaml(path, argparse.Namespace(lr=0.01, layers=[1, 2], name="x"))
    assert load_hparams_from_yaml(path) == {"lr": 0.01, "layers": [1, 2], "name": "x"}


def test_hparams_yaml_written_by_ember_is_read_by_lightning(tmp_path):
    from ember.core.saving import save_hparams_to_yaml

    save_hparams_to_yaml(tmp_path / "h.yaml", {"lr": 0.5, "depth": 3})
    assert pl.core.saving.load_hparams_from_yaml(str(tmp_path / "h.yaml")) == {"lr": 0.5, "depth": 3}


def test_tags_csv_round_trips(tmp_path):
    from ember.core.saving import load_hparams_from_tags_csv, save_hparams_to_tags_csv

    save_hparams_to_tags_csv(tmp_path / "tags.csv", {"lr": 0.1, "flag": True})
    assert load_hparams_from_tags_csv(tmp_path / "tags.csv") == {"lr": 0.1, "flag": True}


def test_experiment_writer_writes_every_column_seen(tmp_path):
    from ember.loggers.csv_logs import ExperimentWriter

    writer = ExperimentWriter(tmp_path / "run")
    writer.log_metrics({"a": torch.tensor(1.0)}, step=0)
    writer.log_metrics({"b": 2.0}, step=1)
    writer.save()
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert lines == ["a,step,b", "1.0,0,", ",1,2.0"]


def test_csv_logger_metrics_file_path_is_where_metrics_go(tmp_path):
    logger = ember.loggers.CSVLogger(tmp_path, name="n", version=0)
    assert logger.metrics_file_path == f"{tmp_path}/n/version_0/metrics.csv"


def test_dummy_logger_accepts_any_call():
    from ember.loggers.logger import DummyLogger

    logger = DummyLogger()
    logger.log_metrics({"x": 1.0}, step=0)
    logger.experiment.add_image("img", torch.zeros(3, 2, 2))
    assert logger.name == "" and logger[0] is logger


def test_merge_dicts_matches_lightnings():
    from ember.loggers.logger import merge_dicts

    dicts = [{"a": 1, "b": 2.0, "c": {"d": 4}}, {"a": 3, "b": 5.0, "c": {"d": 6}}]
    assert merge_dicts(dicts, {"a": max}) == pl.loggers.logger.merge_dicts(dicts, {"a": max})


def test_isolate_rng_puts_back_the_random_state():
    from ember.utilities.seed import isolate_rng

    torch.manual_seed(1)
    random.seed(1)
    with isolate_rng():
        torch.rand(3)
        random.random()
    after = (torch.rand(1).item(), random.random())
    torch.manual_seed(1)
    random.seed(1)
    assert after == (torch.rand(1).item(), random.random())


@pytest.mark.parametrize("batch", [torch.zeros(5, 2), {"x": torch.zeros(7, 1)}, [torch.zeros(3), "text"]])
def test_extract_batch_size_matches_lightnings(batch):
    from ember.utilities.data import extract_batch_size

    assert extract_batch_size(batch) == pl.utilities.data.extract_batch_size(batch)


def test_shared_parameters_are_found_and_tied_again():
    from ember.utilities.parameter_tying import find_shared_parameters, set_shared_parameters

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[1].weight = model[0].weight
    groups = find_shared_parameters(model)
    assert groups == pl.utilities.find_shared_parameters(model) == [["0.weight", "1.weight"]]
    model[1].weight = torch.nn.Parameter(model[1].weight.detach().clone())
    set_shared_parameters(model, groups)
    assert model[1].weight is model[0].weight


def test_hparams_initial_keeps_the_values_first_saved():
    model = Tiny(fail_at=3)
    model.save_hyperparameters({"lr": 0.1})
    model.hparams.lr = 9.0
    assert model.hparams_initial == {"lr": 0.1}


def test_hyperparameters_mixin_saves_init_arguments_of_every_level():
    from ember.core.mixins import HyperparametersMixin

    class Base(HyperparametersMixin):
        def __init__(self, width, depth=2, **extra):
            super().__init__()
            self.save_hyperparameters(ignore="depth")

    class Child(Base):
        def __init__(self, width, act="relu"):
            super().__init__(width, flag=True)

    assert Child(4).hparams == {"width": 4, "act": "relu", "flag": True}


def test_strict_loading_false_resumes_from_a_checkpoint_with_extra_weights(tmp_path):
    trainer = ember.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False,
                            enable_model_summary=False)
    trainer.fit(Tiny(), _loader())
    path = trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path

    class Smaller(Tiny):
        def __init__(self):
            super().__init__()
            del self.layer
            self.layer = torch.nn.Linear(2, 1)
            self.strict_loading = False

    model = Smaller()
    model.register_buffer("extra", torch.zeros(1))
    with pytest.warns(UserWarning, match="strict=False"):
        ember.Trainer(default_root_dir=tmp_path, max_epochs=2, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False).fit(model, _loader(), ckpt_path=path)


def test_all_gather_in_one_process_returns_the_data():
    data = {"x": torch.ones(2)}
    assert Tiny().all_gather(data) is data


def test_lightning_optimizer_wraps_a_plain_optimizer():
    from ember.core.optimizer import LightningOptimizer as Wrapped  # ember.core.optimizer once manual.py moves there

    param = torch.nn.Parameter(torch.ones(1))
    opt = Wrapped(torch.optim.SGD([param], lr=1.0))
    param.grad = torch.ones(1)
    opt.step()
    assert param.item() == 0.0 and opt.optimizer.param_groups[0]["lr"] == 1.0


def test_instantiate_class_builds_from_a_class_path():
    from ember.cli import instantiate_class

    opt = instantiate_class([torch.nn.Parameter(torch.ones(1))], {"class_path": "torch.optim.SGD",
                                                                   "init_args": {"lr": 0.5}})
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 0.5


def test_measure_flops_matches_lightnings():
    from ember.utilities import measure_flops

    model = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    assert measure_flops(model, lambda: model(x)) == pl.utilities.measure_flops(model, lambda: model(x)) > 0


def test_human_readable_counts_match_lightnings():
    from ember.utilities.model_summary.model_summary import get_human_readable_count

    for n in (0, 999, 1000, 1234, 123_456, 5_600_000, 4 * 10**15):
        assert get_human_readable_count(n) == pl.utilities.model_summary.model_summary.get_human_readable_count(n)


def test_cli_lightning_logo_prints_a_banner(capsys):
    ember.cli_lightning_logo()
    assert "ember" in capsys.readouterr().out


def test_param_in_hook_signature_matches_lightnings():
    from ember.utilities.signature_utils import is_param_in_hook_signature

    def step(batch):
        pass

    def step_idx(batch, batch_idx):
        pass

    for fn in (step, step_idx):
        assert (is_param_in_hook_signature(fn, "batch_idx")
                == pl.utilities.signature_utils.is_param_in_hook_signature(fn, "batch_idx"))
