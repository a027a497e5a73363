"""Hooks run in Lightning's order, on callbacks and module, during fit/validate/test/predict.

The expected lists are written by hand from Lightning 2.x's documentation (LightningModule, "Hooks":
the fit()/fit_loop()/val_loop() pseudocode) and its Callback API page, where the Trainer calls each
callback's hook first, then the module's (``cb.`` below marks a callback's). Where the pseudocode is
loose, the list follows what Lightning 2.x does: the sanity check runs between on_fit_start and
on_train_start; on_sanity_check_* are callback-only and on_validation_model_eval/train module-only;
zero_grad comes before the first backward of a window. One documented difference: Lightning enters
``optimizer_step`` before ``training_step`` (it runs training_step as the closure), ember calls it
after the backward, so ``optimizer_step`` is not recorded here.
"""

from __future__ import annotations

import torch

import ember
from ember.callbacks import Callback
from tiny import TinyModel, make_loader, trainer_kwargs

CALLBACK_HOOKS = [h for h in vars(Callback) if h.startswith("on_") or h in ("setup", "teardown")]
MODULE_HOOKS = ["prepare_data", "setup", "configure_model", "configure_optimizers", "teardown",
                "on_validation_model_eval", "on_validation_model_train", "on_test_model_eval", "on_test_model_train",
                "on_predict_model_eval", "optimizer_zero_grad", "backward", "training_step", "validation_step",
                "test_step", "predict_step"] + [h for h in CALLBACK_HOOKS if h not in (
                    "setup", "teardown", "on_sanity_check_start", "on_sanity_check_end", "on_exception")]


def recorded(calls):
    def callback_hook(name):
        return lambda self, *args: calls.append("cb." + name)

    Rec = type("Rec", (Callback,), {h: callback_hook(h) for h in CALLBACK_HOOKS})

    def module_hook(name):
        base = getattr(TinyModel, name, None)

        def hook(self, *args):
            calls.append(name)
            if name in ("configure_optimizers", "backward", "optimizer_zero_grad", "training_step",
                        "on_validation_model_eval", "on_validation_model_train", "on_test_model_eval",
                        "on_test_model_train", "on_predict_model_eval"):
                return base(self, *args)
            if name == "predict_step":
                return self(args[0][0])
            return None

        return hook

    Model = type("Model", (TinyModel,), {h: module_hook(h) for h in MODULE_HOOKS})
    return Model(), Rec()


def both(*hooks):
    out = []
    for h in hooks:
        out += [h] if h in MODULE_ONLY else [f"cb.{h}", h]
    return out


MODULE_ONLY = {"prepare_data", "configure_model", "configure_optimizers", "on_validation_model_eval",
               "on_validation_model_train", "on_test_model_eval", "on_test_model_train", "on_predict_model_eval",
               "optimizer_zero_grad", "backward", "training_step", "validation_step", "test_step", "predict_step"}


def val_batch():
    return both("on_validation_batch_start", "validation_step", "on_validation_batch_end")


def validation(batches):
    return (both("on_validation_model_eval", "on_validation_start", "on_validation_epoch_start")
            + sum((val_batch() for _ in range(batches)), [])
            + both("on_validation_epoch_end", "on_validation_end", "on_validation_model_train"))


def train_batch():
    return both("on_train_batch_start", "training_step", "on_before_zero_grad", "optimizer_zero_grad",
                "on_before_backward", "backward", "on_after_backward", "on_before_optimizer_step",
                "on_train_batch_end")


FIT = (["prepare_data"] + both("setup", "configure_model", "configure_optimizers", "on_fit_start")
       + ["cb.on_sanity_check_start"] + validation(1) + ["cb.on_sanity_check_end"]
       + both("on_train_start", "on_train_epoch_start") + train_batch() + train_batch()
       + validation(2) + both("on_train_epoch_end", "on_train_end", "on_fit_end", "teardown"))


def evaluation(stage, prefix, step, batches, model_train=True):
    out = ["prepare_data"] + both("setup", "configure_model", f"on_{prefix}_model_eval", f"on_{prefix}_start",
                                  f"on_{prefix}_epoch_start")
    for _ in range(batches):
        out += both(f"on_{prefix}_batch_start", step, f"on_{prefix}_batch_end")
    out += both(f"on_{prefix}_epoch_end", f"on_{prefix}_end")
    if model_train:
        out += both(f"on_{prefix}_model_train")
    return out + both("teardown")


def test_fit_validate_test_predict_hook_order(tmp_path):
    calls = []
    model, rec = recorded(calls)
    loader = make_loader(n=8, batch_size=4, shuffle=False)
    t = ember.Trainer(max_epochs=1, num_sanity_val_steps=1, checkpoint_callback=False, callbacks=[rec],
                      **trainer_kwargs(tmp_path))
    t.fit(model, loader, loader)
    assert calls == FIT
    for stage, prefix, step, model_train in (("validate", "validation", "validation_step", True),
                                             ("test", "test", "test_step", True),
                                             ("predict", "predict", "predict_step", False)):
        calls.clear()
        getattr(t, stage)(model, loader, **({} if stage == "predict" else {"verbose": False}))
        assert calls == evaluation(stage, prefix, step, 2, model_train), stage


def test_accumulation_zeroes_once_per_window_and_steps_at_its_end(tmp_path):
    calls = []
    model, rec = recorded(calls)
    t = ember.Trainer(max_epochs=1, limit_train_batches=2, accumulate_grad_batches=2, checkpoint_callback=False,
                      callbacks=[rec], **trainer_kwargs(tmp_path))
    t.fit(model, make_loader(n=8, batch_size=4))
    body = [c for c in calls if c in ("optimizer_zero_grad", "backward", "on_before_optimizer_step")]
    assert body == ["optimizer_zero_grad", "backward", "backward", "on_before_optimizer_step"]


def test_on_train_batch_start_returning_minus_one_ends_the_epoch(tmp_path):
    class Stop(TinyModel):
        def on_train_batch_start(self, batch, batch_idx):
            return -1 if batch_idx == 2 else None

    t = ember.Trainer(max_epochs=2, checkpoint_callback=False, **trainer_kwargs(tmp_path))
    t.fit(Stop(), make_loader())
    assert t.global_step == 4  # two batches in each of two epochs


def test_overridden_optimizer_step_and_clipping_hooks_are_used(tmp_path):
    seen = []

    class Warmup(TinyModel):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            for g in optimizer.param_groups:
                g["lr"] = 0.0 if batch_idx == 0 else 0.1
            optimizer.step(closure=optimizer_closure)
            seen.append(("step", batch_idx))

        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            seen.append(("clip", gradient_clip_val))

    model = Warmup()
    before = [p.clone() for p in model.parameters()]
    t = ember.Trainer(max_steps=1, gradient_clip_val=0.5, checkpoint_callback=False, **trainer_kwargs(tmp_path))
    t.fit(model, make_loader())
    assert seen == [("clip", 0.5), ("step", 0)] and t.global_step == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # lr 0 for batch 0


def test_on_train_batch_end_gets_lightnings_outputs_dict(tmp_path):
    got = []

    class Rec(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            got.append(outputs)

    class M(TinyModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss if batch_idx == 0 else {"loss": loss, "extra": 1}

    ember.Trainer(max_epochs=1, limit_train_batches=2, accumulate_grad_batches=2, checkpoint_callback=False,
                  callbacks=[Rec()], **trainer_kwargs(tmp_path)).fit(M(), make_loader())
    assert set(got[0]) == {"loss"} and set(got[1]) == {"loss", "extra"}
    assert not got[0]["loss"].requires_grad  # detached, and divided by accumulate_grad_batches as in Lightning
