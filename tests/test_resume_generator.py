"""Issue #12, defect 2: a DataLoader with shuffle=True and its own generator resumes exactly at an
epoch boundary (the loader draws its workers' base seed from that generator every epoch, besides
the sampler's permutation)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from tiny import TinyModel, trainer_kwargs


def loader(num_workers=0):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(24, 4, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, (x.sum(1) > 0).long()), batch_size=4, shuffle=True, generator=g,
                      num_workers=num_workers)


def run(root, epochs, ckpt_path=None, num_workers=0):
    ember.seed_everything(1)
    model = TinyModel()
    trainer = ember.Trainer(max_epochs=epochs, **trainer_kwargs(root))
    trainer.fit(model, loader(num_workers), ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_loader_with_its_own_generator_resumes_exactly_at_an_epoch_boundary(tmp_path, num_workers):
    straight = run(tmp_path / "a", 4, num_workers=num_workers)
    run(tmp_path / "b", 2, num_workers=num_workers)
    resumed = run(tmp_path / "b", 4, ckpt_path="last", num_workers=num_workers)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
