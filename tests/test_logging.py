"""self.log as Lightning: defaults per hook, names, the three metric dicts, reductions, metric objects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ember
from ember.callbacks import Callback
from tiny import TinyModel, make_loader, trainer_kwargs


class Probe(TinyModel):
    """The same logging calls as a probe run under Lightning 2.x, whose results the first test pins."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("a", loss, prog_bar=True)
        self.log("b", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("c", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("v", float(batch_idx))
        self.log("vs", float(batch_idx), on_step=True)

    def on_train_epoch_end(self):
        self.log("te", 3.0)

    def on_validation_epoch_end(self):
        self.log("ve", 5.0, prog_bar=True)


def fit(tmp_path, model, **kw):
    kw = {"max_epochs": 1, "checkpoint_callback": False, "logger": True, "log_every_n_steps": 1, **kw}
    t = ember.Trainer(**trainer_kwargs(tmp_path, **kw))
    t.fit(model, make_loader(n=8, batch_size=4, shuffle=False), make_loader(n=8, batch_size=4, shuffle=False))
    return t


def test_names_and_dicts_match_lightning(tmp_path):
    t = fit(tmp_path, Probe(), num_sanity_val_steps=1)
    # what Lightning 2.x's Trainer reports for Probe (callback_metrics, logged_metrics, progress_bar_metrics)
    assert set(t.callback_metrics) == {"a", "b", "b_step", "b_epoch", "c", "v", "vs", "vs_epoch", "ve", "te"}
    assert set(t.logged_metrics) == {"a", "b_step", "b_epoch", "c", "vs_step", "v", "vs_epoch", "ve", "te"}
    assert set(t.progress_bar_metrics) == {"a", "b_step", "b_epoch", "ve"}
    assert t.callback_metrics["v"].item() == 0.5 and t.callback_metrics["vs_epoch"].item() == 0.5
    assert t.callback_metrics["b"].item() == t.callback_metrics["b_epoch"].item() == t.callback_metrics["c"].item()
    assert isinstance(t.progress_bar_metrics["ve"], float)


@pytest.mark.parametrize("reduce_fx, expected", [("mean", 2.5), ("sum", 5.0), ("max", 4.0), ("min", 1.0),
                                                 (torch.max, 4.0)])
def test_reduce_fx(tmp_path, reduce_fx, expected):
    values = iter([1.0, 4.0])  # two validation batches

    class M(TinyModel):
        def validation_step(self, batch, batch_idx):
            self.log("r", next(values), reduce_fx=reduce_fx)

    t = fit(tmp_path, M(), num_sanity_val_steps=0)
    assert t.callback_metrics["r"].item() == pytest.approx(expected)


def test_mean_is_weighted_by_batch_size(tmp_path):
    class M(TinyModel):
        def validation_step(self, batch, batch_idx):
            self.log("w", float(batch_idx), batch_size=1 if batch_idx == 0 else 3)

    assert fit(tmp_path, M(), num_sanity_val_steps=0).callback_metrics["w"].item() == pytest.approx(0.75)


class Mean:
    """A torchmetrics-like metric, duck-typed: update / compute / reset (and forward's cache)."""

    def __init__(self):
        self.resets = 0
        self.reset()

    def update(self, v):
        self.total += float(v)
        self.n += 1

    def __call__(self, v):
        self.update(v)
        self._forward_cache = torch.tensor(float(v))
        return self._forward_cache

    def compute(self):
        return torch.tensor(self.total / self.n)

    def reset(self):
        self.total, self.n, self._forward_cache = 0.0, 0, None
        self.resets += 1


def test_metric_objects_are_computed_and_reset_at_the_epoch_end(tmp_path):
    class M(TinyModel):
        def __init__(self):
            super().__init__()
            self.metric = Mean()

        def training_step(self, batch, batch_idx):
            self.metric(batch_idx)
            self.log("m", self.metric, on_step=True, on_epoch=True)
            return super().training_step(batch, batch_idx)

    model = M()
    t = fit(tmp_path, model, max_epochs=2)
    assert t.callback_metrics["m_epoch"].item() == pytest.approx(0.5)  # batches 0 and 1 of the last epoch
    assert t.callback_metrics["m_step"].item() == 1.0
    assert model.metric.resets == 3  # at construction and at each epoch's end


def test_torchmetrics_metric_logged_directly(tmp_path):
    torchmetrics = pytest.importorskip("torchmetrics")

    class M(TinyModel):
        def __init__(self):
            super().__init__()
            self.acc = torchmetrics.classification.BinaryAccuracy()

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.acc(self(x).argmax(1), y)
            self.log("val_acc", self.acc)

    model = M()
    t = fit(tmp_path, model, num_sanity_val_steps=0)
    x, y = make_loader(n=8, batch_size=8, shuffle=False).dataset.tensors
    expected = (model(x).argmax(1) == y).float().mean()
    assert t.callback_metrics["val_acc"].item() == pytest.approx(expected.item())


def test_sync_dist_values_go_through_the_loops_reduce(tmp_path):
    ops = []

    class M(TinyModel):
        def training_step(self, batch, batch_idx):
            self.log("synced", 1.0, sync_dist=True)
            self.log("local", 1.0)
            return super().training_step(batch, batch_idx)

    t = ember.Trainer(**trainer_kwargs(tmp_path, max_steps=1, checkpoint_callback=False))
    t.reduce = lambda tensor, op: (ops.append(op), tensor * 2)[1]
    t.fit(M(), make_loader())
    assert t.callback_metrics["synced"].item() == 2.0 and t.callback_metrics["local"].item() == 1.0
    assert ops == ["mean"]


def test_log_dict_and_logging_where_lightning_refuses(tmp_path):
    class M(TinyModel):
        def training_step(self, batch, batch_idx):
            self.log_dict({"p": 1.0, "q": 2.0}, prog_bar=True)
            return super().training_step(batch, batch_idx)

    t = fit(tmp_path, M())
    assert {"p", "q"} <= set(t.progress_bar_metrics)

    class Bad(TinyModel):
        def setup(self, stage):
            self.log("x", 1.0)

    with pytest.raises(ember.MisconfigurationError, match="cannot be called inside setup"):
        fit(tmp_path, Bad())


def test_checkpoint_callbacks_see_what_the_module_logs_at_the_train_epoch_end(tmp_path):
    seen = {}

    class M(TinyModel):
        def on_train_epoch_end(self):
            self.log("epoch_score", 7.0)

    class LikeEarlyStopping(Callback):  # a monitoring callback: runs after the module's hook
        def on_train_epoch_end(self, trainer, module):
            seen["score"] = trainer.callback_metrics.get("epoch_score")

    LikeEarlyStopping.__name__ = "EarlyStopping"
    fit(tmp_path, M(), callbacks=[LikeEarlyStopping()])
    assert seen["score"].item() == 7.0


def test_on_train_start_may_log_an_epoch_value(tmp_path):
    class M(TinyModel):
        def on_train_start(self):
            self.log("started", 1.0)

    assert fit(tmp_path, M()).callback_metrics["started"].item() == 1.0


def test_the_loops_reduce_can_be_set_once_the_loop_exists(tmp_path):
    class M(TinyModel):
        def training_step(self, batch, batch_idx):
            self.log("synced", 1.0, sync_dist=True, on_step=False, on_epoch=True, reduce_fx="sum")
            return super().training_step(batch, batch_idx)

    class SetReduce(Callback):
        def on_train_start(self, trainer, module):
            trainer.fit_loop.reduce = lambda tensor, op: tensor * 10  # what a distributed strategy would do

    t = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, checkpoint_callback=False, callbacks=[SetReduce()]))
    t.fit(M(), make_loader())
    assert t.callback_metrics["synced"].item() == 40.0  # four batches summed, then "reduced" across ranks


def test_a_repeated_log_call_skips_its_checks_only_while_its_arguments_stay_the_same():
    """The second and later ``self.log`` of a name in one hook with the first call's arguments reuse its
    checks; other arguments are checked in full (and refused), another hook shares the entry as before."""
    from ember.errors import MisconfigurationError
    from ember.loops.results import Results

    r = Results(training=True)
    r.log("training_step", "x", torch.tensor(1.0))
    r.log("training_step", "x", torch.tensor(2.0))
    with pytest.raises(MisconfigurationError, match="twice in `training_step` with different arguments"):
        r.log("training_step", "x", torch.tensor(3.0), prog_bar=True)
    with pytest.raises(MisconfigurationError, match="needs a scalar"):
        r.log("training_step", "x", torch.ones(2))
    r.log("on_train_batch_end", "x", torch.tensor(4.0))  # same levels: the same entry, as before
    r.log("training_step", "x", 5)
    step = r.take_step()
    assert float(step.callback["x"]) == 5.0 and set(step.log) == {"x"} and not step.pbar
    with pytest.raises(MisconfigurationError, match="cannot be called inside setup"):
        r.log("setup", "y", 1.0)
