"""Mirrors the Lightning docs pages "Validate and test a model (basic)"
(https://lightning.ai/docs/pytorch/stable/common/evaluation_basic.html: split a validation set off
with random_split, test_step logging "test_loss", trainer.test(model, dataloaders=...),
trainer.validate(...), trainer.test() after fit using the best checkpoint) and "Deploy models into
production (basic)" (https://lightning.ai/docs/pytorch/stable/deploy/production_basic.html:
predict_step, trainer.predict(model, dataloaders=...)). Only the import differs; the data are
small random tensors instead of MNIST."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import ember as pl


class LitModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.layer(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        test_loss = F.cross_entropy(self.layer(x), y)
        self.log("test_loss", test_loss)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x, _ = batch
        return self.layer(x).softmax(dim=-1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def dataset(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def test_validate_test_and_predict_like_the_docs(tmp_path):
    pl.seed_everything(0)
    train_set = dataset(200, 0)
    train_set_size = int(len(train_set) * 0.8)
    valid_set_size = len(train_set) - train_set_size
    seed = torch.Generator().manual_seed(42)
    train_set, valid_set = random_split(train_set, [train_set_size, valid_set_size], generator=seed)
    train_loader = DataLoader(train_set, batch_size=16)
    valid_loader = DataLoader(valid_set, batch_size=16)
    test_loader = DataLoader(dataset(64, 1), batch_size=16)

    model = LitModel()
    trainer = pl.Trainer(max_epochs=3, default_root_dir=tmp_path, enable_progress_bar=False)
    trainer.fit(model, train_loader, valid_loader)

    (validated,) = trainer.validate(model, dataloaders=valid_loader, verbose=False)
    assert validated["val_loss"] < 0.6
    (tested,) = trainer.test(model, dataloaders=test_loader, verbose=False)
    assert set(tested) == {"test_loss"}
    with pytest.warns(UserWarning, match="best checkpoint of the previous fit is used"):
        (best,) = trainer.test(dataloaders=test_loader, verbose=False)  # no model: the best checkpoint
    assert trainer.ckpt_path == trainer.checkpoint_callback.best_model_path
    assert best["test_loss"] == pytest.approx(tested["test_loss"])  # the last epoch's checkpoint is the model

    predictions = trainer.predict(model, dataloaders=test_loader)
    assert len(predictions) == 4 and predictions[0].shape == (16, 2)
    assert torch.allclose(predictions[0].sum(dim=1), torch.ones(16))
