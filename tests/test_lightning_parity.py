"""The same program under PyTorch Lightning and under ember (only the base classes differ) gives the
same hook order and the same callback/logged/progress-bar metrics. Skipped without pytorch_lightning."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.loggers import CSVLogger

pl = pytest.importorskip("pytorch_lightning")

RECORDED = ["setup", "teardown", "on_fit_start", "on_fit_end", "on_train_start", "on_train_end",
            "on_train_epoch_start", "on_train_epoch_end", "on_train_batch_start", "on_train_batch_end",
            "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad",
            "on_validation_start", "on_validation_end", "on_validation_epoch_start", "on_validation_epoch_end",
            "on_validation_batch_start", "on_validation_batch_end", "on_sanity_check_start", "on_sanity_check_end",
            "on_test_start", "on_test_end", "on_test_epoch_start", "on_test_epoch_end", "on_test_batch_start",
            "on_test_batch_end"]


def program(module_base, callback_base, calls):
    def cb_hook(name):
        return lambda self, *a, **k: calls.append("cb." + name)

    def batch_end(self, trainer, module, outputs, batch, batch_idx):  # what on_train_batch_end receives
        loss = outputs.get("loss") if isinstance(outputs, dict) else None
        calls.append(("cb.on_train_batch_end", sorted(outputs) if isinstance(outputs, dict) else type(outputs),
                      None if loss is None else round(float(loss), 5)))

    Rec = type("Rec", (callback_base,), {**{h: cb_hook(h) for h in RECORDED}, "on_train_batch_end": batch_end})

    class Probe(module_base):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            calls.append("training_step")
            x, y = batch
            loss = nn.functional.cross_entropy(self.layer(x), y)
            self.log("a", loss, prog_bar=True)
            self.log("b", loss, on_step=True, on_epoch=True, prog_bar=True)
            self.log("c", loss * 2, on_epoch=True, on_step=False, reduce_fx="max")
            return loss

        def validation_step(self, batch, batch_idx):
            calls.append("validation_step")
            x, y = batch
            self.log("v", nn.functional.cross_entropy(self.layer(x), y))
            self.log("vs", float(batch_idx), on_step=True)

        def test_step(self, batch, batch_idx):
            calls.append("test_step")
            self.log("t", float(batch_idx), reduce_fx="sum")

        def on_train_epoch_end(self):
            calls.append("on_train_epoch_end")
            self.log("te", 3.0)

        def on_validation_epoch_end(self):
            calls.append("on_validation_epoch_end")
            self.log("ve", 5.0, prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Probe, Rec


def run(kind, tmp_path, manual=False, **trainer_kw):
    calls = []
    if kind == "lightning":
        Probe, Rec = program(pl.LightningModule, pl.Callback, calls)
        logger = pl.loggers.CSVLogger(tmp_path / "l")
        make = lambda **kw: pl.Trainer(enable_model_summary=False, accelerator="cpu", devices=1, **kw)  # noqa: E731
    else:
        Probe, Rec = program(ember.LightningModule, ember.Callback, calls)
        logger = CSVLogger(tmp_path / "e")
        make = ember.Trainer  # noqa: E731
    if manual:
        Probe = manual_variant(Probe, calls)
    torch.manual_seed(0)
    model = Probe()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 4, generator=g)
    loader = DataLoader(TensorDataset(x, (x.sum(1) > 0).long()), batch_size=8)
    kw = dict(max_epochs=2, callbacks=[Rec()], logger=logger, enable_progress_bar=False, enable_checkpointing=False,
              num_sanity_val_steps=1, log_every_n_steps=1, default_root_dir=str(tmp_path))
    trainer = make(**{**kw, **trainer_kw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, loader, loader)
        fitted = (list(calls), _floats(trainer.callback_metrics), _floats(trainer.logged_metrics),
                  _floats(trainer.progress_bar_metrics), trainer.global_step,
                  [p.detach().clone() for p in model.parameters()])
        calls.clear()
        tested = trainer.test(model, loader, verbose=False)
    return fitted, (list(calls), tested)


def manual_variant(Probe, calls):
    class Manual(Probe):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.other = nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            opt_a, opt_b = self.optimizers()
            loss = super().training_step(batch, batch_idx)
            self.manual_backward(loss)
            if batch_idx % 2 == 1:  # accumulate two batches by hand
                opt_a.step()
                opt_a.zero_grad()
            other = self.other(batch[0]).pow(2).mean()
            self.manual_backward(other)
            opt_b.step()
            opt_b.zero_grad()

        def configure_optimizers(self):
            return [torch.optim.SGD(self.layer.parameters(), lr=0.1), torch.optim.SGD(self.other.parameters(), lr=0.1)]

    return Manual


def _floats(d):
    return {k: float(v) for k, v in d.items()}


@pytest.mark.parametrize("manual, trainer_kw", [
    (False, {}), (False, {"accumulate_grad_batches": 2}), (True, {}), (False, {"val_check_interval": 2}),
    (False, {"max_steps": 3}), (False, {"max_steps": 4, "limit_val_batches": 1, "num_sanity_val_steps": 0}),
], ids=["automatic", "accumulation", "manual", "val_check_interval", "max_steps_at_epoch_end", "max_steps_mid_epoch"])
def test_lightning_and_ember_agree(tmp_path, manual, trainer_kw):
    (l_calls, l_cb, l_log, l_bar, l_step, l_params), (l_test_calls, l_test) = run("lightning", tmp_path, manual,
                                                                                  **trainer_kw)
    (e_calls, e_cb, e_log, e_bar, e_step, e_params), (e_test_calls, e_test) = run("ember", tmp_path, manual,
                                                                                  **trainer_kw)
    assert e_calls == l_calls
    assert e_test_calls == l_test_calls
    assert e_step == l_step
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(e_params, l_params))
    for ours, theirs in ((e_cb, l_cb), (e_log, l_log), (e_bar, l_bar)):
        assert set(ours) == set(theirs)
        assert ours == pytest.approx(theirs, rel=1e-5)
    assert len(e_test) == len(l_test) == 1 and e_test[0] == pytest.approx(l_test[0])


def eval_program(module_base):
    torchmetrics = pytest.importorskip("torchmetrics")

    class Multi(module_base):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)
            self.acc = torchmetrics.classification.MulticlassAccuracy(num_classes=2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.layer(x)
            self.acc(logits, y)
            self.log("train_acc", self.acc, on_step=True, on_epoch=True)
            return nn.functional.cross_entropy(logits, y)

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self.layer(x), y))

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self.layer(batch[0]).argmax(1)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Multi


def test_several_loaders_metric_objects_and_predict_agree(tmp_path):
    outs = []
    for base, make in ((pl.LightningModule, lambda **kw: pl.Trainer(enable_model_summary=False, accelerator="cpu",
                                                                     devices=1, **kw)),
                       (ember.LightningModule, ember.Trainer)):
        torch.manual_seed(0)
        model = eval_program(base)()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(24, 4, generator=g)
        loader = DataLoader(TensorDataset(x, (x.sum(1) > 0).long()), batch_size=8)
        trainer = make(max_epochs=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                       num_sanity_val_steps=0, default_root_dir=str(tmp_path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, loader, [loader, loader])
            fitted = _floats(trainer.callback_metrics)
            validated = trainer.validate(model, [loader, loader], verbose=False)
            predicted = trainer.predict(model, [loader, loader])
        outs.append((fitted, validated, predicted))
    (l_fit, l_val, l_pred), (e_fit, e_val, e_pred) = outs
    assert set(e_fit) == set(l_fit) and e_fit == pytest.approx(l_fit, rel=1e-5)
    assert len(e_val) == len(l_val) == 2 and all(a == pytest.approx(b) for a, b in zip(e_val, l_val))
    assert [[p.tolist() for p in d] for d in e_pred] == [[p.tolist() for p in d] for d in l_pred]
