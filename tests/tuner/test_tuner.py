"""Tuner: lr_find and scale_batch_size search, then leave the model and Trainer as they were; the same
program under Lightning finds the same learning rate and batch size."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks import BatchSizeFinder, LearningRateFinder
from ember.errors import MisconfigurationError
from ember.tuner import Tuner

pl = pytest.importorskip("pytorch_lightning")
from pytorch_lightning.tuner import Tuner as PLTuner  # noqa: E402

g = torch.Generator().manual_seed(0)
X = torch.randn(256, 4, generator=g)
DATA = TensorDataset(X, X @ torch.ones(4, 1))


def model_class(lib):
    class Regression(lib.LightningModule):
        def __init__(self, lr=1e-3, batch_size=2):
            super().__init__()
            self.save_hyperparameters()
            self.layer = nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

        def train_dataloader(self):
            return DataLoader(DATA, batch_size=self.hparams.batch_size)

    return Regression


def setup(lib, tmp_path):
    torch.manual_seed(1)
    model = model_class(lib)()
    trainer = lib.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=str(tmp_path))
    return model, trainer


def test_lr_find_gives_lightnings_results_and_suggestion(tmp_path):
    model, trainer = setup(ember, tmp_path / "e")
    ours = Tuner(trainer).lr_find(model, num_training=60, min_lr=1e-4, max_lr=5.0)
    pl_model, pl_trainer = setup(pl, tmp_path / "l")
    theirs = PLTuner(pl_trainer).lr_find(pl_model, num_training=60, min_lr=1e-4, max_lr=5.0)
    assert ours.results["lr"] == pytest.approx(theirs.results["lr"])
    assert ours.results["loss"] == pytest.approx(theirs.results["loss"])
    assert ours.suggestion() == pytest.approx(theirs.suggestion())
    assert model.hparams.lr == pytest.approx(theirs.suggestion())


def test_lr_find_restores_the_weights_and_leaves_no_file(tmp_path):
    model, trainer = setup(ember, tmp_path)
    before = [p.detach().clone() for p in model.parameters()]
    Tuner(trainer).lr_find(model, num_training=20)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert list(tmp_path.glob(".*ckpt")) == [] and trainer.global_step == 0
    assert not any(isinstance(cb, LearningRateFinder) for cb in trainer.callbacks)


def test_fit_after_lr_find_trains_as_a_fresh_fit_with_the_suggested_lr(tmp_path):
    model, trainer = setup(ember, tmp_path / "a")
    finder = Tuner(trainer).lr_find(model, num_training=20)
    trainer.fit(model)
    torch.manual_seed(1)
    fresh = model_class(ember)(lr=finder.suggestion())
    torch.manual_seed(1)  # the same random state a fresh fit starts from
    _, other = setup(ember, tmp_path / "b")
    other.fit(fresh)
    assert trainer.global_step == other.global_step == 256
    torch.testing.assert_close(model.layer.weight, fresh.layer.weight)


def test_lr_find_without_an_lr_attribute_says_what_to_add(tmp_path):
    class NoLr(model_class(ember)):
        def __init__(self):
            super().__init__()
            del self.hparams["lr"]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    _, trainer = setup(ember, tmp_path)
    with pytest.raises(AttributeError, match="`lr` or `learning_rate`"):
        Tuner(trainer).lr_find(NoLr())


def test_learning_rate_finder_callback_searches_then_trains(tmp_path):
    model, trainer = setup(ember, tmp_path)
    cb = LearningRateFinder(num_training_steps=20)
    trainer.callbacks.append(cb)
    trainer.fit(model)
    assert cb.optimal_lr is not None and trainer.global_step == 256


@pytest.mark.parametrize("mode", ["power", "binsearch"])
def test_scale_batch_size_finds_lightnings_size(tmp_path, mode):
    model, trainer = setup(ember, tmp_path / "e")
    ours = Tuner(trainer).scale_batch_size(model, mode=mode, max_trials=6)
    pl_model, pl_trainer = setup(pl, tmp_path / "l")
    assert ours == PLTuner(pl_trainer).scale_batch_size(pl_model, mode=mode, max_trials=6)
    assert model.hparams.batch_size == ours


def test_scale_batch_size_stops_at_the_dataset_length(tmp_path):
    model, trainer = setup(ember, tmp_path)
    before = [p.detach().clone() for p in model.parameters()]
    assert Tuner(trainer).scale_batch_size(model, mode="power") == 256
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_scale_batch_size_halves_after_running_out_of_memory(tmp_path):
    class Hungry(model_class(ember)):
        def training_step(self, batch, batch_idx):
            if batch[0].shape[0] > 16:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().training_step(batch, batch_idx)

    torch.manual_seed(1)
    _, trainer = setup(ember, tmp_path)
    assert Tuner(trainer).scale_batch_size(Hungry(), mode="power") == 16


def test_scale_batch_size_refuses_loaders_passed_to_fit(tmp_path):
    class Given(model_class(ember)):
        train_dataloader = None

    _, trainer = setup(ember, tmp_path)
    with pytest.raises(MisconfigurationError, match="must come from train_dataloader"):
        Tuner(trainer).scale_batch_size(Given(), train_dataloaders=DataLoader(DATA, batch_size=2))


def test_batch_size_finder_refuses_an_unknown_mode():
    with pytest.raises(MisconfigurationError, match="mode must be one of"):
        BatchSizeFinder(mode="triple")


def test_plot_needs_matplotlib_or_draws(tmp_path):
    model, trainer = setup(ember, tmp_path)
    finder = Tuner(trainer).lr_find(model, num_training=20)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install matplotlib"):
            finder.plot()
    else:
        matplotlib.use("Agg")
        assert finder.plot(suggest=True) is not None


def test_a_search_ending_mid_epoch_leaves_current_epoch_to_the_fit(tmp_path):
    """The learning-rate search stops part-way through an epoch (4 steps of 3-batch epochs); the fit after it
    counts its epochs from 0, as Lightning (ember counted the first one as epoch 1)."""
    from parity import classifier, run

    def noting_epochs(lib):
        model = classifier(lib)
        model.lr, model.epochs, step = 0.1, [], model.training_step

        def training_step(batch, batch_idx):
            model.epochs.append(model.current_epoch)
            return step(batch, batch_idx)

        model.training_step = training_step
        return model

    seen = []
    for lib in (pl, ember):
        finder = lib.callbacks.LearningRateFinder(num_training_steps=4)
        seen.append(run(lib, noting_epochs, tmp_path, max_epochs=2, callbacks_extra=[finder]).model.epochs)
    assert seen[0] == [0, 0, 0, 1] + [0, 0, 0, 1, 1, 1]  # the search's 4 steps, then the fit's 2 epochs
    assert seen[1] == seen[0]
