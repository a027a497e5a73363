"""Programs that break where ember differs from Lightning: each runs under real Lightning and ember
(the parity harness, ``tests/parity.py``), or is pinned to what Lightning was seen to do."""

from __future__ import annotations

import pytest
import torch

import ember
from parity import assert_same_run, classifier, loader, pl, run, run_both


def without_batch_idx(lib):
    """Step methods that take only the batch (an RL-style loop has no use for the index)."""

    class NoIndex(lib.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return NoIndex()


def test_step_methods_without_batch_idx_run(tmp_path):
    assert_same_run(*run_both(without_batch_idx, tmp_path))


def grad_in_validation(lib):
    """A validation_step that fine-tunes a copy with gradients on (meta-learning's inner loop)."""

    class Inner(lib.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)
            self.grad_enabled_in_validation = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.layer(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.grad_enabled_in_validation.append(torch.is_grad_enabled())
            with torch.enable_grad():
                w = self.layer.weight.detach().clone().requires_grad_(True)
                loss = torch.nn.functional.cross_entropy(x @ w.t() + self.layer.bias.detach(), y)
                (g,) = torch.autograd.grad(loss, w)
            adapted = torch.nn.functional.cross_entropy(x @ (w - 0.1 * g).t() + self.layer.bias, y)
            self.log("val_adapted", adapted)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Inner()


def test_validation_during_fit_runs_under_no_grad_so_enable_grad_works(tmp_path):
    lightning, ours = run_both(grad_in_validation, tmp_path, num_sanity_val_steps=1)
    assert ours.model.grad_enabled_in_validation == lightning.model.grad_enabled_in_validation
    assert not any(ours.model.grad_enabled_in_validation)
    assert_same_run(lightning, ours)


@pytest.mark.parametrize("inference_mode", [True, False])
def test_trainer_validate_follows_inference_mode(tmp_path, inference_mode):
    seen = {}
    for lib in (pl, ember):
        model = classifier(lib)
        model.validation_step = lambda batch, batch_idx, lib=lib: seen.setdefault(
            lib.__name__, torch.is_inference_mode_enabled())
        kw = dict(accelerator="cpu", devices=1) if lib is pl else {}
        trainer = lib.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                              inference_mode=inference_mode, default_root_dir=str(tmp_path), **kw)
        trainer.validate(model, loader(), verbose=False)
    assert seen == {"pytorch_lightning": inference_mode, "ember": inference_mode}


@pytest.mark.parametrize("hook, stage, replacement", [
    ("training_epoch_end", "fit", "on_train_epoch_end"),
    ("validation_epoch_end", "fit", "on_validation_epoch_end"),
    ("validation_epoch_end", "validate", "on_validation_epoch_end"),
    ("test_epoch_end", "test", "on_test_epoch_end"),
])
def test_lightning_1x_epoch_end_hooks_are_refused_naming_the_replacement(tmp_path, hook, stage, replacement):
    model = classifier(ember)
    model.test_step = model.validation_step
    setattr(model, hook, lambda outputs: None)
    trainer = ember.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            default_root_dir=str(tmp_path))
    with pytest.raises(NotImplementedError, match=rf"`{hook}` has been removed .*`{replacement}`"):
        if stage == "fit":
            trainer.fit(model, loader(), loader())
        else:
            getattr(trainer, stage)(model, loader(), verbose=False)


def test_lightning_refuses_the_same_1x_hooks():
    """The behaviour pinned above is Lightning's own (checked here against the installed version)."""
    model = classifier(pl)
    model.training_epoch_end = lambda outputs: None
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    with pytest.raises(NotImplementedError, match="`training_epoch_end` has been removed"):
        trainer.fit(model, loader())


def compiled(lib):
    """A compiled module whose steps do not call self.log: Lightning 2.6.6's self.log inspects the step's
    signature, which dynamo (torch 2.13) cannot trace, so under Lightning only such programs run."""
    model = classifier(lib)
    model.training_step = lambda batch, batch_idx: torch.nn.functional.cross_entropy(model.layer(batch[0]), batch[1])
    model.validation_step = lambda batch, batch_idx: None
    return torch.compile(model, backend="eager")


def test_fit_accepts_a_torch_compiled_module(tmp_path):
    lightning, ours = run_both(compiled, tmp_path)
    assert_same_run(lightning, ours)
    assert ours.trainer.lightning_module is ours.model._orig_mod  # trained in place: the wrapper sees it


def test_a_compiled_module_may_log_in_its_steps(tmp_path):
    ours = run(ember, lambda lib: torch.compile(classifier(lib), backend="eager"), tmp_path)
    assert ours.global_step == 6 and set(ours.callback_metrics) == {"train_loss", "val_loss"}


def test_load_from_checkpoint_takes_weights_only(tmp_path):
    trainer = ember.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    model = classifier(ember)
    trainer.fit(model, loader())
    path = trainer.checkpoint_callback.best_model_path
    loaded = type(model).load_from_checkpoint(path, weights_only=False)
    torch.testing.assert_close(loaded.layer.weight, model.layer.weight)


class Saved(ember.LightningModule):
    def __init__(self, width: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 2)


class Data(ember.LightningDataModule):
    def __init__(self, batch_size: int = 4):
        super().__init__()
        self.save_hyperparameters()


def test_modules_and_datamodules_pickle_with_their_hparams():
    import pickle

    model, dm = pickle.loads(pickle.dumps((Saved(5), Data(8))))
    assert model.hparams.width == 5 and model.layer.in_features == 5 and dm.hparams.batch_size == 8


class Fitted(Saved):
    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_fitted_module_pickles_without_its_trainer(tmp_path):
    import pickle

    model = Fitted(4)
    ember.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  default_root_dir=str(tmp_path)).fit(model, loader())
    copy = pickle.loads(pickle.dumps(model))
    assert copy.trainer is None and model.trainer is not None
    torch.testing.assert_close(copy.layer.weight, model.layer.weight)


def test_pl_trainer_environment_variables_give_defaults(monkeypatch):
    monkeypatch.setenv("PL_TRAINER_MAX_EPOCHS", "7")
    monkeypatch.setenv("PL_TRAINER_LOG_EVERY_N_STEPS", "3")
    trainer = ember.Trainer(log_every_n_steps=5, logger=False)
    assert trainer.max_epochs == 7 and trainer.log_every_n_steps == 5  # passed arguments win, as in Lightning
    assert pl.Trainer(log_every_n_steps=5, logger=False).max_epochs == 7  # what Lightning does, pinned


def test_fit_from_a_missing_checkpoint_raises_file_not_found(tmp_path):
    trainer = ember.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        trainer.fit(classifier(ember), loader(), ckpt_path=str(tmp_path / "missing.ckpt"))
    with pytest.raises(ember.errors.CheckpointError):  # still ember's error too
        ember.load_checkpoint(tmp_path / "missing.ckpt")


def test_ddp_spawn_is_accepted_and_runs_as_ddp(tmp_path):
    trainer = ember.Trainer(strategy="ddp_spawn", devices=1, accelerator="cpu", max_epochs=1, logger=False,
                            enable_progress_bar=False, default_root_dir=str(tmp_path))
    trainer.fit(classifier(ember), loader())  # one device: one process, as Lightning
    assert trainer.global_step == 3


def test_fit_reports_the_summary_and_why_it_stopped(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="ember")
    ember.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  default_root_dir=str(tmp_path)).fit(classifier(ember), loader())
    text = caplog.text
    assert "| Name  | Type   | Params" in text and "10        Total params" in text  # Lightning's table
    assert "`Trainer.fit` stopped: `max_epochs=2` reached." in text


def test_max_steps_stop_is_reported(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="ember")
    ember.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=str(tmp_path)).fit(classifier(ember), loader())
    assert "`Trainer.fit` stopped: `max_steps=2` reached." in caplog.text and "Params" not in caplog.text


def test_unset_max_epochs_and_a_long_logging_interval_warn_as_lightning(tmp_path):
    trainer = ember.Trainer(max_steps=-1, enable_checkpointing=False, enable_progress_bar=False,
                            limit_train_batches=1, max_time={"seconds": 30}, default_root_dir=str(tmp_path))
    assert trainer.max_epochs == -1  # max_time set: no epoch limit
    trainer = ember.Trainer(enable_checkpointing=False, enable_progress_bar=False, limit_train_batches=1,
                            limit_val_batches=0, default_root_dir=str(tmp_path))
    model = classifier(ember)
    model.on_train_batch_end = lambda *args: setattr(model.trainer, "should_stop", True)  # one step is enough
    with pytest.warns(UserWarning, match="`max_epochs` was not set. Setting it to 1000 epochs"):
        with pytest.warns(UserWarning, match=r"number of training batches \(1\) is smaller than the logging interval"):
            trainer.fit(model, loader())
    assert trainer.max_epochs == 1000


@pytest.mark.parametrize("call, error", [
    (lambda m: m.log("x", 1.0, reduce_fx="MAX", on_epoch=True), None),
    (lambda m: m.log("x", 1.0, reduce_fx="median"), "reduce_fx"),
    (lambda m: (m.log("x", 1.0, prog_bar=True), m.log("x", 2.0)), "twice in `training_step` with different"),
    (lambda m: m.log("x", {"a": 1.0}), None),
    (lambda m: m.log("x", torch.ones(3)), None),
], ids=["reduce_fx_upper_case", "unknown_reduce_fx", "twice_with_other_arguments", "dict_value", "vector_value"])
def test_self_log_misuse_fails_where_lightning_fails(tmp_path, call, error):
    outcomes = []
    for lib in (pl, ember):
        model = classifier(lib)
        step = model.training_step
        model.training_step = lambda batch, batch_idx, m=model, s=step: (call(m), s(batch, batch_idx))[1]
        kw = dict(accelerator="cpu", devices=1) if lib is pl else {}
        trainer = lib.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False, default_root_dir=str(tmp_path), **kw)
        try:
            trainer.fit(model, loader())
            outcomes.append(None)
        except Exception as e:  # noqa: BLE001 - compared below
            outcomes.append(e)
    theirs, ours = outcomes
    assert (theirs is None) == (ours is None), (theirs, ours)
    if ours is not None:
        assert isinstance(ours, ValueError) or type(theirs).__name__ == "MisconfigurationException"
    if error:
        assert error in str(ours)


def test_self_log_without_a_trainer_warns_as_lightning():
    with pytest.warns(UserWarning, match="the `self.trainer` reference is not registered"):
        classifier(ember).log("x", 1.0)
