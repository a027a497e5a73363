"""StochasticWeightAveraging: the averaged weights, the SWA schedule, and its state across a resume."""

from __future__ import annotations

import pytest
import torch

import ember
from ember.callbacks import ModelCheckpoint, StochasticWeightAveraging
from ember.errors import MisconfigurationError
from tiny import TinyModel, make_loader, trainer_kwargs


class Recorder(ember.callbacks.Callback):
    """The weights at each epoch start (what SWA averages) and the lr of each epoch."""

    def __init__(self):
        self.weights, self.lrs = [], []

    def on_train_epoch_start(self, trainer, module):
        self.weights.append([p.detach().clone() for p in module.parameters()])
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def fit(tmp_path, callbacks, max_epochs=4, **kw):
    ember.seed_everything(0)
    model = TinyModel()
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=max_epochs, callbacks=callbacks, **kw))
    trainer.fit(model, make_loader(shuffle=False))
    return model, trainer


def test_model_ends_with_the_mean_of_the_weights_at_each_averaged_epoch_start(tmp_path):
    rec = Recorder()
    model, _ = fit(tmp_path, [StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2), rec],
                   enable_checkpointing=False)
    averaged = rec.weights[1:]  # swa_epoch_start=2: epochs 1, 2, 3 (0-based) are averaged
    for i, p in enumerate(model.parameters()):
        torch.testing.assert_close(p.detach(), torch.stack([w[i] for w in averaged]).mean(0))


def test_swa_lr_anneals_to_swa_lrs(tmp_path):
    rec = Recorder()
    fit(tmp_path, [StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1, annealing_epochs=1,
                                             annealing_strategy="linear"), rec], enable_checkpointing=False)
    assert rec.lrs[-1] == pytest.approx(0.01)


def test_resumed_run_averages_the_same_weights_as_a_straight_run(tmp_path):
    straight, _ = fit(tmp_path / "a", [StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2)],
                      enable_checkpointing=False)
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    fit(tmp_path / "b", [StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2), ck], max_epochs=3)
    state = ember.load_checkpoint(tmp_path / "ck" / "last.ckpt")["callbacks"]["StochasticWeightAveraging"]
    assert state["n_averaged"] == 2 and state["scheduler_state"] is not None
    resumed = TinyModel()
    trainer = ember.Trainer(**trainer_kwargs(tmp_path / "c", max_epochs=4, enable_checkpointing=False,
                                             callbacks=[StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2)]))
    trainer.fit(resumed, make_loader(shuffle=False), ckpt_path=tmp_path / "ck" / "last.ckpt")
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_swa_refuses_two_optimizers(tmp_path):
    class Two(TinyModel):
        def configure_optimizers(self):
            return [torch.optim.SGD(self.net[0].parameters(), lr=0.1),
                    torch.optim.SGD(self.net[2].parameters(), lr=0.1)]

        def training_step(self, batch, batch_idx, optimizer_idx=0):
            return super().training_step(batch, batch_idx)

    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[StochasticWeightAveraging(0.1)]))
    with pytest.raises(MisconfigurationError, match="one optimizer"):
        trainer.fit(Two(), make_loader())


@pytest.mark.parametrize("bad", [0, 1.5, -0.1])
def test_swa_epoch_start_is_checked(bad):
    with pytest.raises(MisconfigurationError, match="swa_epoch_start"):
        StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=bad)


def test_swa_lrs_must_be_positive():
    with pytest.raises(MisconfigurationError, match="swa_lrs must be a positive float"):
        StochasticWeightAveraging(swa_lrs=-1.0)
