"""Resuming fit: every piece of training state comes back, and epoch-boundary resume is exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ember
from ember.callbacks import Callback, ModelCheckpoint
from tiny import TinyModel, make_loader, trainer_kwargs


class DropoutModel(TinyModel):
    """Shuffled data, dropout, Adam and a StepLR: every random stream and every state kind."""

    def __init__(self, **kw):
        super().__init__(scheduler="step", **kw)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.net(self.drop(x))


def run(root, epochs, ckpt_path=None, model=None, **kw):
    trainer = ember.Trainer(max_epochs=epochs, **trainer_kwargs(root, **kw))
    model = model or DropoutModel()
    trainer.fit(model, make_loader(), make_loader(n=8, shuffle=False), ckpt_path=ckpt_path)
    return trainer, model


def test_epoch_boundary_resume_matches_an_uninterrupted_run(tmp_path):
    ember.seed_everything(0)
    _, straight = run(tmp_path / "a", 4)
    ember.seed_everything(0)
    run(tmp_path / "b", 2)
    ember.seed_everything(123)  # a different global state before resuming must not matter
    _, resumed = run(tmp_path / "b", 4, ckpt_path=str(tmp_path / "b/checkpoints/epoch=1-step=8.ckpt"),
                     model=DropoutModel())
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_resume_restores_epoch_step_optimizer_and_scheduler(tmp_path):
    first, model = run(tmp_path, 2)
    path = tmp_path / "checkpoints/epoch=1-step=8.ckpt"
    trainer = ember.Trainer(max_epochs=2, **trainer_kwargs(tmp_path / "b"))
    fresh = DropoutModel()
    trainer.fit(fresh, make_loader(), ckpt_path=str(path))  # nothing left to train: state as loaded
    assert (trainer.current_epoch, trainer.global_step) == (2, 8)
    assert trainer.optimizers[0].state_dict()["state"][0]["exp_avg"].equal(
        first.optimizers[0].state_dict()["state"][0]["exp_avg"])
    assert trainer.lr_schedulers[0].get_last_lr() == first.lr_schedulers[0].get_last_lr() == [0.025]


def test_resume_continues_with_the_next_epoch_up_to_max_epochs(tmp_path):
    run(tmp_path, 2)
    epochs = []

    class Record(Callback):
        def on_train_epoch_start(self, trainer, module):
            epochs.append(trainer.current_epoch)

    run(tmp_path, 4, ckpt_path="last", callbacks=[Record()])
    assert epochs == [2, 3]


class Counter(Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.batches += 1

    def state_dict(self):
        return {"batches": self.batches}

    def load_state_dict(self, state):
        self.batches = state["batches"]


def test_callback_state_survives_a_resume(tmp_path):
    run(tmp_path, 2, callbacks=[Counter()])
    counter = Counter()
    run(tmp_path, 3, ckpt_path="last", callbacks=[counter])
    assert counter.batches == 12


def test_model_checkpoint_best_scores_survive_a_resume(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="val_loss", save_top_k=2)
    run(tmp_path, 2, checkpoint_callback=cb)
    again = ModelCheckpoint(dirpath=tmp_path / "c", monitor="val_loss", save_top_k=2)
    trainer = ember.Trainer(max_epochs=2, checkpoint_callback=again, **trainer_kwargs(tmp_path))
    trainer.fit(DropoutModel(), make_loader(), ckpt_path=cb.best_model_path)
    assert torch.equal(again.best_model_score, cb.best_model_score)
    assert again.best_k_models.keys() == cb.best_k_models.keys()
    assert all(torch.equal(again.best_k_models[k], v) for k, v in cb.best_k_models.items())


def test_amp_scaler_state_survives_a_resume(tmp_path):
    first, _ = run(tmp_path, 1, precision="16-mixed")
    first.precision_plugin.scaler.update(1234.0)  # a scale a fresh scaler would never have
    first.save_checkpoint(tmp_path / "amp.ckpt")
    assert ember.load_checkpoint(tmp_path / "amp.ckpt")["amp_scaling_state"]["scale"] == 1234.0
    second, _ = run(tmp_path / "b", 1, ckpt_path=str(tmp_path / "amp.ckpt"), precision="16-mixed")
    assert second.precision_plugin.scaler.get_scale() == 1234.0


def test_weights_only_checkpoint_cannot_resume_fit(tmp_path):
    first, _ = run(tmp_path, 1)
    first.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    with pytest.raises(ember.CheckpointError, match="holds weights only"):
        run(tmp_path, 2, ckpt_path=str(tmp_path / "w.ckpt"))


def test_resume_from_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ember.CheckpointError, match="no such file"):
        run(tmp_path, 1, ckpt_path=str(tmp_path / "nope.ckpt"))


def test_resume_from_checkpoint_and_ckpt_path_together_is_an_error(tmp_path):
    trainer = ember.Trainer(resume_from_checkpoint="a.ckpt", **trainer_kwargs(tmp_path))
    with pytest.raises(ember.MisconfigurationError, match="use one"):
        trainer.fit(TinyModel(), make_loader(), ckpt_path="b.ckpt")


def test_ckpt_path_last_without_checkpoints_starts_fresh(tmp_path):
    with pytest.warns(UserWarning, match="a fresh run starts"):
        trainer, _ = run(tmp_path, 1, ckpt_path="last")
    assert trainer.global_step == 4


def test_ckpt_path_last_picks_the_newest(tmp_path):
    run(tmp_path, 2, checkpoint_callback=ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_top_k=-1))
    trainer, _ = run(tmp_path, 2, ckpt_path="last")
    assert trainer.ckpt_path.endswith("epoch=1-step=8.ckpt")


def test_ckpt_path_best_before_any_save_is_an_error(tmp_path):
    with pytest.raises(ember.MisconfigurationError, match=r"ckpt_path='best'\): the ModelCheckpoint has saved no"):
        run(tmp_path, 1, ckpt_path="best")


def test_ckpt_path_best_resumes_from_the_best_checkpoint(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="val_loss", save_top_k=-1)
    trainer = ember.Trainer(max_epochs=2, checkpoint_callback=cb, **trainer_kwargs(tmp_path))
    trainer.fit(DropoutModel(), make_loader(), make_loader(n=8, shuffle=False))
    best = cb.best_model_path
    trainer.max_epochs = 3
    trainer.fit(DropoutModel(), make_loader(), make_loader(n=8, shuffle=False), ckpt_path="best")
    assert trainer.ckpt_path == best


def test_resume_with_a_different_optimizer_setup_is_an_error(tmp_path):
    run(tmp_path, 1)

    class TwoOpt(DropoutModel):
        def configure_optimizers(self):
            return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.SGD(self.parameters(), lr=0.1)]

    with pytest.raises(ember.CheckpointMismatchError, match="1 optimizer\\(s\\) and 1 LR scheduler\\(s\\)"):
        run(tmp_path, 2, ckpt_path="last", model=TwoOpt())


def test_ckpt_path_last_skips_a_corrupt_newer_checkpoint_with_a_warning(tmp_path):
    run(tmp_path, 2, checkpoint_callback=ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_top_k=-1))
    newest = tmp_path / "checkpoints" / "epoch=1-step=8.ckpt"
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0x10  # one flipped bit in the tensor data
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="skipping .*epoch=1-step=8.ckpt"):
        trainer, _ = run(tmp_path, 2, ckpt_path="last")
    assert trainer.ckpt_path.endswith("epoch=0-step=4.ckpt")


def test_an_exception_in_a_save_hook_leaves_earlier_checkpoints_untouched(tmp_path):
    first, model = run(tmp_path, 1)
    first.save_checkpoint(tmp_path / "keep.ckpt")
    before = (tmp_path / "keep.ckpt").read_bytes()

    def broken(checkpoint):
        raise RuntimeError("hook failed")

    model.on_save_checkpoint = broken
    with pytest.raises(RuntimeError, match="hook failed"):
        first.save_checkpoint(tmp_path / "keep.ckpt")
    assert (tmp_path / "keep.ckpt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_a_save_inside_an_accumulation_window_resumes_exactly(tmp_path):
    class MidWindow(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 2 and not trainer.optimizer_stepped and batch_idx == 1:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")  # two of a window's three batches are pending

    ember.seed_everything(0)
    _, straight = run(tmp_path / "a", 2, accumulate_grad_batches=3, callbacks=[MidWindow()])
    assert "accumulated_grads" in ember.load_checkpoint(tmp_path / "mid.ckpt")
    _, resumed = run(tmp_path / "b", 2, ckpt_path=str(tmp_path / "mid.ckpt"), accumulate_grad_batches=3)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_checkpointing_does_not_disturb_the_training_random_stream(tmp_path):
    ember.seed_everything(3)
    _, with_saves = run(tmp_path / "a", 2, checkpoint_callback=ModelCheckpoint(
        dirpath=tmp_path / "a", every_n_train_steps=1, save_top_k=-1))
    ember.seed_everything(3)
    _, without = run(tmp_path / "b", 2, checkpoint_callback=False)
    for a, b in zip(with_saves.parameters(), without.parameters()):
        assert torch.equal(a, b)
