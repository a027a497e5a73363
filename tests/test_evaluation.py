"""trainer.validate/test/predict, ckpt_path, several loaders, the sanity check, epoch-end logging."""

from __future__ import annotations

import csv

import pytest
import torch

import ember
from ember.callbacks import Callback, ModelCheckpoint
from tiny import TinyModel, make_loader, trainer_kwargs


class Eval(TinyModel):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.calls.append(("val", batch_idx, dataloader_idx))
        self.log("idx", float(batch_idx))

    def test_step(self, batch, batch_idx):
        self.calls.append(("test", batch_idx))
        x, y = batch
        self.log("test_acc", (self(x).argmax(1) == y).float().mean())

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).argmax(1)


def trainer(tmp_path, **kw):
    kw.setdefault("checkpoint_callback", False)
    return ember.Trainer(**trainer_kwargs(tmp_path, **kw))


def test_validate_returns_one_dict_of_epoch_means_like_lightning(tmp_path, capsys):
    out = trainer(tmp_path).validate(Eval(), make_loader(n=32, batch_size=8, shuffle=False))
    assert out == [{"idx": pytest.approx(1.5)}]
    assert "Validate metric" in capsys.readouterr().out  # verbose=True prints a table


def test_test_runs_test_step_within_limit_test_batches(tmp_path):
    model = Eval()
    out = trainer(tmp_path, limit_test_batches=2).test(model, make_loader(), verbose=False)
    assert [c for c in model.calls if c[0] == "test"] == [("test", 0), ("test", 1)]
    assert set(out[0]) == {"test_acc"} and isinstance(out[0]["test_acc"], float)


def test_predict_returns_the_predict_step_outputs(tmp_path):
    t = trainer(tmp_path, limit_predict_batches=3)
    preds = t.predict(Eval(), make_loader(n=32, batch_size=8, shuffle=False))
    assert len(preds) == 3 and all(p.shape == (8,) for p in preds)
    assert t.predict(Eval(), make_loader(), return_predictions=False) == []


def test_several_loaders_get_dataloader_idx_and_one_dict_each(tmp_path):
    model = Eval()
    out = trainer(tmp_path).validate(model, [make_loader(n=8, shuffle=False), make_loader(n=16, shuffle=False)],
                                     verbose=False)
    assert out == [{"idx/dataloader_idx_0": 0.0}, {"idx/dataloader_idx_1": 0.5}]
    assert ("val", 1, 1) in model.calls


def test_evaluation_without_data_or_step_is_explained(tmp_path):
    with pytest.raises(ember.MisconfigurationError, match="no data to test"):
        trainer(tmp_path).test(Eval())
    with pytest.raises(ember.MisconfigurationError, match="needs TinyModel.test_step"):
        trainer(tmp_path).test(TinyModel(), make_loader())
    with pytest.raises(ember.MisconfigurationError, match="needs a model"):
        trainer(tmp_path).validate()


def test_ckpt_path_best_loads_the_best_weights_only(tmp_path):
    class Worse(Eval):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("score", float(self.current_epoch))  # epoch 0 is the best (min)

    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="score", save_top_k=1)
    t = ember.Trainer(max_epochs=3, checkpoint_callback=cb, **trainer_kwargs(tmp_path))
    model = Worse()
    t.fit(model, make_loader(), make_loader(n=8))
    best = ember.load_checkpoint(cb.best_model_path)["state_dict"]
    assert not torch.equal(model.net[0].weight, best["net.0.weight"])
    step = t.global_step
    t.test(model, make_loader(), ckpt_path="best", verbose=False)
    assert torch.equal(model.net[0].weight, best["net.0.weight"]) and t.global_step == step
    assert t.ckpt_path == cb.best_model_path


def test_ckpt_path_to_a_file_and_last(tmp_path):
    t = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    model = Eval()
    t.fit(model, make_loader())
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.net[0].weight.zero_()
    t.validate(model, make_loader(n=8), ckpt_path="last", verbose=False)
    assert torch.equal(model.net[0].weight, saved["net.0.weight"])
    with pytest.raises(ember.CheckpointError, match="no such file"):
        t.validate(model, make_loader(n=8), ckpt_path=str(tmp_path / "nope.ckpt"))


def test_values_logged_in_on_validation_epoch_end_are_there_right_after_that_validation(tmp_path):
    seen = []

    class M(Eval):
        def on_validation_epoch_end(self):
            self.log("ve", float(self.current_epoch) + 10)

    class Look(Callback):
        def on_validation_end(self, trainer, module):
            seen.append(trainer.callback_metrics.get("ve"))

    trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0, callbacks=[Look()]).fit(M(), make_loader(),
                                                                                  make_loader(n=8))
    assert [float(v) for v in seen] == [10.0, 11.0]


def test_a_value_logged_in_on_train_epoch_end_reaches_metrics_and_the_logger(tmp_path):
    class M(Eval):
        def on_train_epoch_end(self):
            self.log("te", 3.0)

    t = trainer(tmp_path, max_epochs=1, logger=ember.loggers.CSVLogger(tmp_path, name="logs"))
    t.fit(M(), make_loader())
    assert float(t.callback_metrics["te"]) == 3.0 and float(t.logged_metrics["te"]) == 3.0
    rows = list(csv.DictReader(open(tmp_path / "logs/version_0/metrics.csv")))
    assert [r["te"] for r in rows if r.get("te")] == ["3.0"]


def test_sanity_check_runs_two_batches_whose_values_are_not_kept(tmp_path):
    hooks = []

    class M(Eval):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.calls.append(("val", batch_idx, self.trainer.sanity_checking))
            if self.trainer.sanity_checking:
                self.log("only_in_sanity", 1.0)

    class Rec(Callback):
        def on_sanity_check_start(self, trainer, module):
            hooks.append("start")

        def on_sanity_check_end(self, trainer, module):
            hooks.append("end")

    model = M()
    t = trainer(tmp_path, max_epochs=1, limit_train_batches=1, logger=True, callbacks=[Rec()])
    t.fit(model, make_loader(), make_loader(n=32))
    assert model.calls[:2] == [("val", 0, True), ("val", 1, True)] and hooks == ["start", "end"]
    assert "only_in_sanity" not in t.callback_metrics and "only_in_sanity" not in t.logged_metrics
    model = M()
    trainer(tmp_path, max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0).fit(model, make_loader(),
                                                                                       make_loader(n=32))
    assert all(not sanity for _, _, sanity in model.calls)


def test_evaluation_keeps_submodule_modes_and_random_state(tmp_path):
    model = Eval()
    model.net[0].eval()  # a frozen part stays in eval mode; the rest stays training
    state = torch.get_rng_state()
    trainer(tmp_path).validate(model, make_loader(n=8), verbose=False)
    assert model.training and not model.net[0].training and model.net[2].training
    assert torch.equal(torch.get_rng_state(), state)


def test_evaluation_hooks_run_on_callbacks_then_module(tmp_path):
    calls = []

    class M(Eval):
        def on_test_epoch_start(self):
            calls.append("module")

    class Rec(Callback):
        def on_test_epoch_start(self, trainer, module):
            calls.append("callback")

    trainer(tmp_path, callbacks=[Rec()]).test(M(), make_loader(n=8), verbose=False)
    assert calls == ["callback", "module"]
