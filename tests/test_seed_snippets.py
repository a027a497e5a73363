"""Every snippet of the seed page ("Saving and loading weights") with only the import changed."""

from __future__ import annotations

import os
from argparse import Namespace

import torch
from torch import nn

import ember as pl
from ember.callbacks import ModelCheckpoint
from tiny import make_loader


class LitModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 2)

    def forward(self, x):
        return self.l1(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return make_loader()


def ckpt_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.ckpt"))


def test_automatic_saving_is_on_by_default_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = pl.Trainer(max_epochs=1, enable_progress_bar=False)
    trainer.fit(LitModel())
    assert ckpt_files(tmp_path) == ["lightning_logs/version_0/checkpoints/epoch=0-step=4.ckpt"]  # Lightning's


def test_default_save_path_moves_the_checkpoints(tmp_path):
    trainer = pl.Trainer(default_save_path=str(tmp_path / "your/path"), max_epochs=1, enable_progress_bar=False)
    trainer.fit(LitModel(), make_loader())
    assert ckpt_files(tmp_path) == ["your/path/lightning_logs/version_0/checkpoints/epoch=0-step=4.ckpt"]


def test_the_seed_defaults_callback_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # DEFAULTS used by the Trainer
    checkpoint_callback = ModelCheckpoint(
        filepath=os.getcwd(),
        save_top_k=True,
        verbose=True,
        monitor='val_loss',
        mode='min',
        prefix=''
    )
    trainer = pl.Trainer(checkpoint_callback=checkpoint_callback, max_epochs=2, enable_progress_bar=False)
    trainer.fit(LitModel(), make_loader(), make_loader(n=16, shuffle=False))
    files = ckpt_files(tmp_path)
    assert len(files) == 1 and files[0].startswith("epoch=")
    assert checkpoint_callback.best_model_path.endswith(files[0])
    assert "val_loss" in capsys.readouterr().out  # verbose=True reports each save


def test_checkpoint_callback_false_leaves_no_checkpoint_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = pl.Trainer(checkpoint_callback=False, max_epochs=2, enable_progress_bar=False, logger=False)
    trainer.fit(LitModel(), make_loader())
    assert list(tmp_path.rglob("*")) == []


def test_hparams_namespace_is_saved_and_restores_the_model(tmp_path):
    # usually these come from command line args
    args = Namespace(learning_rate=0.001, in_dim=4, out_dim=2)

    class MyLightningModule(pl.LightningModule):
        def __init__(self, hparams):
            self.hparams = hparams  # the seed's pattern: no super().__init__() call
            self.l1 = nn.Linear(hparams.in_dim, hparams.out_dim)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.l1(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)

    model = MyLightningModule(args)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=str(tmp_path), enable_progress_bar=False)
    trainer.fit(model, make_loader())
    trainer.save_checkpoint(tmp_path / "example.ckpt")
    assert pl.load_checkpoint(tmp_path / "example.ckpt")["hyper_parameters"]["learning_rate"] == 0.001

    new_model = MyLightningModule.load_from_checkpoint(checkpoint_path=str(tmp_path / "example.ckpt"))
    assert isinstance(new_model.hparams, Namespace)
    assert new_model.hparams == args
    assert torch.equal(new_model.l1.weight, model.l1.weight)


def test_manual_saving_then_loading(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class MyModel(pl.LightningModule):
        def __init__(self, hparams):
            super().__init__()
            self.hparams = hparams
            self.l1 = nn.Linear(hparams.in_dim, hparams.out_dim)

        def forward(self, x):
            return self.l1(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    hparams = Namespace(in_dim=4, out_dim=2)
    trainer = pl.Trainer(max_epochs=1, enable_progress_bar=False)
    model = MyModel(hparams)
    trainer.fit(model, make_loader())
    trainer.save_checkpoint("example.ckpt")
    new_model = MyModel.load_from_checkpoint(checkpoint_path="example.ckpt")
    new_model.eval()
    x = torch.randn(3, 4)
    y_hat = new_model(x)
    assert torch.equal(y_hat, model(x))


def test_load_with_explicit_init_arguments(tmp_path):
    class MyModel(pl.LightningModule):
        def __init__(self, in_dim, out_dim):
            super().__init__()
            self.l1 = nn.Linear(in_dim, out_dim)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.l1(x).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = MyModel(in_dim=128, out_dim=10)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 128), torch.zeros(8)),
                                       batch_size=4)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=str(tmp_path), enable_progress_bar=False)
    trainer.fit(model, data)
    PATH = str(tmp_path / "lightning_logs/version_0/checkpoints" / "epoch=0-step=2.ckpt")
    restored = MyModel.load_from_checkpoint(PATH, in_dim=128, out_dim=10)
    assert torch.equal(restored.l1.weight, model.l1.weight)


def test_resume_from_checkpoint_restores_the_training_state(tmp_path):
    first = pl.Trainer(max_epochs=2, default_root_dir=str(tmp_path), enable_progress_bar=False)
    model = LitModel()
    first.fit(model, make_loader())
    path = str(tmp_path / "lightning_logs/version_0/checkpoints" / "epoch=1-step=8.ckpt")

    model = LitModel()
    trainer = pl.Trainer(resume_from_checkpoint=path, max_epochs=3, default_root_dir=str(tmp_path / "b"),
                         enable_progress_bar=False)
    # automatically restores model, epoch, step, LR schedulers, apex, etc...
    trainer.fit(model)
    assert trainer.current_epoch == 3
    assert trainer.global_step == 12
