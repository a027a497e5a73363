"""automatic_optimization = False: self.optimizers(), manual_backward, toggling, counting, exact resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ember
from ember.callbacks import Callback
from tiny import TinyModel, make_loader, trainer_kwargs


class Manual(TinyModel):
    """Accumulates two batches by hand, with dropout and a StepLR it steps itself."""

    def __init__(self, accumulate: int = 2):
        super().__init__(scheduler="step")
        self.automatic_optimization = False
        self.accumulate = accumulate
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.net(self.drop(x))

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.manual_backward(loss / self.accumulate)
        if (batch_idx + 1) % self.accumulate == 0:
            opt.step()
            opt.zero_grad()
            self.lr_schedulers().step()
        self.log("loss", loss, prog_bar=True)
        return loss  # returned, never stepped: the Trainer does not step in manual mode


def run(root, epochs, ckpt_path=None, callbacks=(), model=None):
    t = ember.Trainer(max_epochs=epochs, callbacks=list(callbacks), **trainer_kwargs(root))
    model = model or Manual()
    t.fit(model, make_loader(n=48), make_loader(n=8, shuffle=False), ckpt_path=ckpt_path)
    return t, model


def test_manual_steps_count_global_step_and_returned_losses_are_not_stepped(tmp_path):
    t, model = run(tmp_path, 1)
    assert t.global_step == 3  # 6 batches, one step per two
    assert t.lr_schedulers[0].last_epoch == 3
    assert "loss" in t.progress_bar_metrics


def test_resume_mid_epoch_inside_a_hand_accumulation_window_is_exact(tmp_path):
    class SaveAt(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2:  # batch 3 of a two-batch window: grads pending
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    ember.seed_everything(0)
    _, straight = run(tmp_path / "a", 2, callbacks=[SaveAt()])
    assert "accumulated_grads" in ember.load_checkpoint(tmp_path / "mid.ckpt")
    ember.seed_everything(5)
    _, resumed = run(tmp_path / "b", 2, ckpt_path=str(tmp_path / "mid.ckpt"))
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


class Gan(ember.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.g = nn.Linear(4, 4)
        self.d = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        x, _ = batch
        self.toggle_optimizer(opt_d)
        assert not any(p.requires_grad for p in self.g.parameters())
        d_loss = self.d(x).mean() - self.d(self.g(x).detach()).mean()
        self.manual_backward(d_loss)
        opt_d.step()
        opt_d.zero_grad()
        self.untoggle_optimizer(opt_d)
        self.toggle_optimizer(opt_g)
        g_loss = self.d(self.g(x)).mean()
        self.manual_backward(g_loss)
        opt_g.step()
        opt_g.zero_grad()
        self.untoggle_optimizer(opt_g)

    def configure_optimizers(self):
        return [torch.optim.SGD(self.g.parameters(), lr=0.1), torch.optim.SGD(self.d.parameters(), lr=0.1)]


def test_two_optimizers_each_count_a_step_and_toggling_restores_requires_grad(tmp_path):
    model = Gan()
    t = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    t.fit(model, make_loader())
    assert t.global_step == 8  # two optimizer steps per batch, as Lightning counts them
    assert all(p.requires_grad for p in model.parameters())


def test_stepping_by_hand_under_automatic_optimization_is_refused(tmp_path):
    class Twice(TinyModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.optimizers().step()
            return loss

    with pytest.raises(ember.MisconfigurationError, match="would step twice"):
        ember.Trainer(max_steps=1, **trainer_kwargs(tmp_path)).fit(Twice(), make_loader())


def test_manual_optimization_refuses_trainer_accumulation_and_clipping(tmp_path):
    for kw, message in (({"accumulate_grad_batches": 2}, "accumulate by hand"),
                        ({"gradient_clip_val": 1.0}, "self.clip_gradients")):
        with pytest.raises(ember.MisconfigurationError, match=message):
            ember.Trainer(max_steps=1, **trainer_kwargs(tmp_path, **kw)).fit(Manual(), make_loader())


def test_manual_backward_under_automatic_optimization_is_refused(tmp_path):
    class Wrong(TinyModel):
        def training_step(self, batch, batch_idx):
            self.manual_backward(super().training_step(batch, batch_idx))

    with pytest.raises(ember.MisconfigurationError, match="automatic_optimization = False"):
        ember.Trainer(max_steps=1, **trainer_kwargs(tmp_path)).fit(Wrong(), make_loader())


def test_resume_where_a_validation_released_hand_accumulated_gradients_is_exact(tmp_path):
    class SaveAt(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 0 and batch_idx == 1:  # a validation follows and zeroes the gradients
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    def go(root, ckpt_path=None, callbacks=()):
        t = ember.Trainer(max_epochs=1, val_check_interval=2, num_sanity_val_steps=0, callbacks=list(callbacks),
                          **trainer_kwargs(root))
        model = Manual(accumulate=3)
        t.fit(model, make_loader(n=48), make_loader(n=8, shuffle=False), ckpt_path=ckpt_path)
        return model

    ember.seed_everything(0)
    straight = go(tmp_path / "a", callbacks=[SaveAt()])
    ember.seed_everything(1)
    resumed = go(tmp_path / "b", ckpt_path=str(tmp_path / "mid.ckpt"))
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
