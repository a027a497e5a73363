"""CombinedLoader: Lightning's four modes, several training loaders in fit, exact mid-epoch resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.errors import MisconfigurationError
from ember.utilities.combined_loader import CombinedLoader
from tiny import trainer_kwargs

pl_combined = pytest.importorskip("pytorch_lightning.utilities.combined_loader")

SHAPES = [[range(5), range(2)], {"a": range(3), "b": range(7)}, (range(1), range(2)), [range(0), range(3)]]


@pytest.mark.parametrize("mode", ["min_size", "max_size_cycle", "max_size", "sequential"])
@pytest.mark.parametrize("iterables", SHAPES, ids=["list", "dict", "tuple", "empty"])
def test_each_mode_yields_what_lightnings_combined_loader_yields(mode, iterables):
    theirs = pl_combined.CombinedLoader(iterables, mode)
    expected = list(theirs)
    assert list(CombinedLoader(iterables, mode)) == expected
    assert len(CombinedLoader(iterables, mode)) == len(theirs)


def test_unknown_mode_is_refused():
    with pytest.raises(MisconfigurationError, match="mode must be one of"):
        CombinedLoader([range(2)], mode="zip")


def loader(n, seed, shuffle=True):
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))
    return DataLoader(data, batch_size=2, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


class Two(ember.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        a, b = (batch["a"], batch["b"]) if isinstance(batch, dict) else batch
        self.seen.append(batch_idx)
        return nn.functional.mse_loss(self.layer(a[0]), a[1]) + nn.functional.mse_loss(self.layer(b[0]), b[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_on_a_list_of_loaders_cycles_the_shorter_until_the_longest_ends(tmp_path):
    model = Two()
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=False))
    trainer.fit(model, [loader(8, 0), loader(4, 1)])
    assert model.seen == [0, 1, 2, 3] and trainer.num_training_batches == 4


def test_fit_on_a_dict_of_loaders_gives_a_dict_batch(tmp_path):
    model = Two()
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=False))
    trainer.fit(model, {"a": loader(4, 0), "b": loader(8, 1)})
    assert trainer.global_step == 4


def test_fit_on_a_min_size_combined_loader_stops_with_the_shortest(tmp_path):
    model = Two()
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=False))
    trainer.fit(model, CombinedLoader([loader(8, 0), loader(4, 1)], mode="min_size"))
    assert trainer.global_step == 2


def test_fit_refuses_a_sequential_combined_loader(tmp_path):
    trainer = ember.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=False))
    with pytest.raises(MisconfigurationError, match="mode='sequential'"):
        trainer.fit(Two(), CombinedLoader([loader(8, 0)], mode="sequential"))


def test_resume_mid_epoch_with_several_shuffled_loaders_is_exact(tmp_path):
    def run(root, **kw):
        torch.manual_seed(0)
        model = Two()
        trainer = ember.Trainer(**trainer_kwargs(root, **kw))
        return model, trainer

    straight, t = run(tmp_path / "a", max_epochs=2, enable_checkpointing=False)
    t.fit(straight, [loader(12, 0), loader(6, 1)])
    first, t = run(tmp_path / "b", max_epochs=2, max_steps=9,
                   callbacks=[ember.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=9)])
    t.fit(first, [loader(12, 0), loader(6, 1)])
    resumed, t = run(tmp_path / "c", max_epochs=2, enable_checkpointing=False)
    t.fit(resumed, [loader(12, 0), loader(6, 1)], ckpt_path=str(next((tmp_path / "ck").glob("*.ckpt"))))
    assert t.global_step == 12
    torch.testing.assert_close(straight.layer.weight, resumed.layer.weight, rtol=0, atol=0)
