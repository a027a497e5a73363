"""Mirrors Lightning's image-classifier examples: the LitClassifier of the "Lightning in 15 minutes" /
"Image classification" material and the docs pages "Validate and test a model", "Saving and loading
checkpoints" and "Deploy models into production" (https://lightning.ai/docs/pytorch/stable/deploy/production_intermediate.html:
``to_torchscript``, ``to_onnx``): a torchmetrics ``Accuracy`` object logged directly, ModelCheckpoint on
``val_acc``, EarlyStopping, TensorBoardLogger, ``trainer.test(ckpt_path="best")``, ``load_from_checkpoint``
and export. Only the imports differ; the data are scikit-learn's 8x8 digits instead of MNIST."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import ember as pl
from ember.callbacks import EarlyStopping, ModelCheckpoint
from ember.loggers import TensorBoardLogger

torchmetrics = pytest.importorskip("torchmetrics")
datasets = pytest.importorskip("sklearn.datasets")


class LitClassifier(pl.LightningModule):
    def __init__(self, hidden: int = 32, lr: float = 3e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=10)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=10)
        self.test_acc = torchmetrics.Accuracy(task="multiclass", num_classes=10)
        self.example_input_array = torch.zeros(2, 1, 8, 8)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train_loss", loss)
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test_acc", self.test_acc)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def digits_loaders():
    d = datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    full = TensorDataset(x, torch.tensor(d.target))
    train, val, test = random_split(full, [1000, 397, 400], generator=torch.Generator().manual_seed(0))
    return (DataLoader(train, batch_size=100, shuffle=True), DataLoader(val, batch_size=200),
            DataLoader(test, batch_size=200))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("tensorboard")
    root = tmp_path_factory.mktemp("classifier")
    pl.seed_everything(1)
    train, val, test = digits_loaders()
    checkpoint = ModelCheckpoint(monitor="val_acc", mode="max")
    stopping = EarlyStopping(monitor="val_loss", mode="min", patience=2)
    trainer = pl.Trainer(max_epochs=6, callbacks=[checkpoint, stopping], logger=TensorBoardLogger(root, name="digits"),
                         enable_progress_bar=False)
    model = LitClassifier()
    trainer.fit(model, train, val)
    fit_metrics = (dict(trainer.callback_metrics), dict(trainer.progress_bar_metrics))
    results = trainer.test(model, test, ckpt_path="best")
    return root, trainer, fit_metrics, checkpoint, results


def test_accuracy_objects_are_logged_under_their_names(trained):
    _, _, (callback_metrics, bar_metrics), _, _ = trained
    assert {"train_loss", "train_acc_step", "train_acc_epoch", "val_loss", "val_acc"} <= set(callback_metrics)
    assert {"val_loss", "val_acc"} <= set(bar_metrics)
    assert callback_metrics["val_acc"] > 0.85


def test_early_stopping_tracked_the_best_val_loss(trained):
    _, trainer, (callback_metrics, _), _, _ = trained
    stopping = trainer.early_stopping_callback
    assert isinstance(stopping, EarlyStopping) and stopping.monitor == "val_loss"
    assert float(stopping.best_score) <= float(callback_metrics["val_loss"])
    assert 0 <= stopping.wait_count <= 2 and trainer.current_epoch <= 6


def test_best_checkpoint_is_the_best_val_acc_in_lightnings_folder(trained):
    root, trainer, _, checkpoint, results = trained
    folder = root / "digits" / "version_0"
    assert os.path.dirname(checkpoint.best_model_path) == str(folder / "checkpoints")
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(folder))
    assert (folder / "hparams.yaml").is_file()
    assert checkpoint.best_model_score == max(checkpoint.best_k_models.values())
    assert trainer.ckpt_path == checkpoint.best_model_path
    assert set(results[0]) == {"test_acc"} and results[0]["test_acc"] > 0.85


def test_load_from_checkpoint_gives_the_best_models_outputs(trained):
    _, trainer, _, checkpoint, results = trained
    best = LitClassifier.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu")
    assert best.hparams == {"hidden": 32, "lr": 3e-3}
    assert all(p.device.type == "cpu" for p in best.parameters())
    again = pl.Trainer(enable_progress_bar=False, logger=False).test(best, digits_loaders()[2])
    assert again[0]["test_acc"] == pytest.approx(results[0]["test_acc"])


def test_torchscript_export_matches_the_module(trained, tmp_path):
    _, _, _, checkpoint, _ = trained
    model = LitClassifier.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu").eval()
    x = torch.rand(5, 1, 8, 8)
    script = model.to_torchscript(file_path=tmp_path / "model.pt")
    loaded = torch.jit.load(tmp_path / "model.pt")
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(script(x), expected) and torch.equal(loaded(x), expected)


def test_onnx_export_matches_the_module(trained, tmp_path):
    missing = [p for p in ("onnx", "onnxscript") if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"to_onnx needs {missing}, which are not installed")
    from onnx.reference import ReferenceEvaluator  # onnx's own runtime: no onnxruntime needed

    _, _, _, checkpoint, _ = trained
    model = LitClassifier.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu").eval()
    path = tmp_path / "model.onnx"
    model.to_onnx(path, export_params=True)  # input: model.example_input_array (2 images)
    session = ReferenceEvaluator(str(path))
    x = torch.rand(2, 1, 8, 8)
    (out,) = session.run(None, {session.input_names[0]: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-5)
