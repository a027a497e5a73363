"""Lightning `.ckpt` files, both ways, checked against real PyTorch Lightning.

Real Lightning writes the `.ckpt` files (once per module, in fixtures) and resumes ember's exports;
ember reads Lightning's files without running code and resumes them where Lightning itself would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks import Callback as EmberCallback
from ember.callbacks import ModelCheckpoint as EmberModelCheckpoint
from ember.checkpoint.lightning.convert import convert
from ember.checkpoint.format.unpickle import AttributeDict
from ember.checkpoint.lightning import is_lightning, to_ember, to_lightning
from ember.errors import CheckpointError, UnsafeCheckpointError

pl = pytest.importorskip("pytorch_lightning")
from pytorch_lightning.plugins.precision import MixedPrecision  # noqa: E402
from pytorch_lightning.utilities.parsing import AttributeDict as LightningAttributeDict  # noqa: E402

EPOCH_END = "epoch=0-step=5.ckpt"      # saved by ModelCheckpoint at the end of epoch 0 (5 batches an epoch)
MID_EPOCH = "steps/epoch=1-step=6.ckpt"  # saved by every_n_train_steps=3, after batch 1 of epoch 1
LAST = "last.ckpt"                     # the end of epoch 1


def _define(base):
    class Net(base):
        def __init__(self, hidden: int = 3, lr: float = 0.1, name: str = "net", tags=("a",), cfg=None):
            super().__init__()
            self.save_hyperparameters()
            self.l1 = nn.Linear(4, hidden)
            self.l2 = nn.Linear(hidden, 1)

        def forward(self, x):
            return self.l2(torch.relu(self.l1(x)))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.mse_loss(self(x), y))

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
            return {"optimizer": opt,
                    "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
                                     "interval": "epoch"}}

    return Net


LitNet = _define(pl.LightningModule)
EmberNet = _define(ember.Module)
HPARAMS = dict(hidden=3, lr=0.1, name="net", tags=["a", "b"])


def _loaders():
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(40, 4, generator=g), torch.randn(40, 1, generator=g))
    return DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=20)


def _lightning_trainer(root, **kw) -> "pl.Trainer":
    kw = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False,
          "default_root_dir": str(root), **kw}
    return pl.Trainer(**kw)


def _ember_trainer(root, **kw) -> ember.Trainer:
    return ember.Trainer(**{"logger": False, "enable_progress_bar": False, "default_root_dir": str(root), **kw})


class _FirstBatch:
    """Where a (resumed) fit trains its first batch: epoch, global step, batch index, learning rate."""

    seen = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.seen is None:
            self.seen = (trainer.current_epoch, trainer.global_step, batch_idx,
                         trainer.optimizers[0].param_groups[0]["lr"])


class LitFirstBatch(_FirstBatch, pl.Callback):
    pass


class EmberFirstBatch(_FirstBatch, EmberCallback):
    pass


def _lightning_resume(path, root, max_epochs=3, weights_only=True) -> tuple:
    rec = LitFirstBatch()
    train, val = _loaders()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = _lightning_trainer(root, max_epochs=max_epochs, callbacks=[rec], enable_checkpointing=False)
        trainer.fit(LitNet(**HPARAMS), train, val, ckpt_path=str(path), weights_only=weights_only)
    return rec.seen


def _ember_resume(path, root, max_epochs=3) -> tuple:
    rec = EmberFirstBatch()
    train, val = _loaders()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _ember_trainer(root, max_epochs=max_epochs, callbacks=[rec], enable_checkpointing=False).fit(
            EmberNet(**HPARAMS), train, val, ckpt_path=str(path))
    return rec.seen


@pytest.fixture(scope="module")
def lit(tmp_path_factory) -> Path:
    """Files real Lightning wrote: a 2-epoch run (epoch-end, mid-epoch and last checkpoints), one with an
    AttributeDict hyperparameter, one with a GradScaler (16-mixed on CPU)."""
    root = tmp_path_factory.mktemp("lightning")
    torch.manual_seed(0)
    train, val = _loaders()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        callbacks = [pl.callbacks.ModelCheckpoint(dirpath=root, monitor="val_loss", save_top_k=2, save_last=True),
                     pl.callbacks.ModelCheckpoint(dirpath=root / "steps", every_n_train_steps=3, save_top_k=-1),
                     pl.callbacks.EarlyStopping(monitor="val_loss", patience=5)]
        _lightning_trainer(root, max_epochs=2, callbacks=callbacks).fit(LitNet(**HPARAMS), train, val)

        trainer = _lightning_trainer(root, max_steps=1, enable_checkpointing=False)
        trainer.fit(LitNet(**HPARAMS, cfg=LightningAttributeDict(depth=2)), train)
        trainer.save_checkpoint(root / "attrdict.ckpt")

        amp = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
        trainer = _lightning_trainer(root, max_steps=2, plugins=[amp], enable_checkpointing=False)
        trainer.fit(LitNet(**HPARAMS), train)
        trainer.save_checkpoint(root / "amp.ckpt")
    return root


@pytest.fixture(scope="module")
def emb(tmp_path_factory) -> Path:
    """Files ember wrote: the same 2-epoch run as ``lit``'s, with the same checkpoint callbacks."""
    root = tmp_path_factory.mktemp("ember")
    torch.manual_seed(0)
    train, val = _loaders()
    callbacks = [EmberModelCheckpoint(dirpath=root, monitor="val_loss", save_top_k=2, save_last=True),
                 EmberModelCheckpoint(dirpath=root / "steps", every_n_train_steps=3, save_top_k=-1)]
    _ember_trainer(root, max_epochs=2, callbacks=callbacks).fit(EmberNet(**HPARAMS), train, val)
    return root


# ----------------------------------------------------------------------------- reading Lightning files


def test_lightning_file_with_attributedict_loads_without_importing_lightning(lit):
    code = ("import sys, ember; c = ember.load_checkpoint(sys.argv[1]); cfg = c['hyper_parameters']['cfg']; "
            "print(type(cfg).__name__, cfg.depth, sorted(m for m in sys.modules if 'lightning' in m.split('.')[0]))")
    out = subprocess.run([sys.executable, "-c", code, str(lit / "attrdict.ckpt")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["AttributeDict", "2", "[]"]


@pytest.mark.parametrize("module", ["lightning_fabric.utilities.data", "lightning.fabric.utilities.data",
                                    "pytorch_lightning.utilities.parsing", "lightning.pytorch.utilities.parsing"])
def test_attributedict_from_every_lightning_module_path_becomes_embers(lit, tmp_path, module):
    original = b"pytorch_lightning.utilities.parsing\nAttributeDict\n"
    src, dst = zipfile.ZipFile(lit / "attrdict.ckpt"), tmp_path / "moved.ckpt"
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("data.pkl"):
                assert data.count(original) == 1
                data = data.replace(original, module.encode() + b"\nAttributeDict\n")
            out.writestr(name, data)
    cfg = ember.load_checkpoint(dst)["hyper_parameters"]["cfg"]
    assert type(cfg) is AttributeDict and cfg.depth == 2


def test_lightning_file_builds_an_ember_module_with_load_from_checkpoint(lit):
    model = EmberNet.load_from_checkpoint(lit / "attrdict.ckpt")
    saved = torch.load(lit / "attrdict.ckpt", weights_only=False)  # our own file, written above
    assert model.hparams.tags == ["a", "b"] and model.hparams.cfg.depth == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved["state_dict"][k]), k


def test_code_running_payload_in_a_lightning_file_is_still_refused(lit, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    ckpt = torch.load(lit / "attrdict.ckpt", weights_only=False)
    ckpt["hyper_parameters"]["cfg"]["evil"] = Payload()
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="ember refuses to load it"):
        ember.load_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_lightning_classes_are_not_allowed_in_torch_load_after_an_ember_load(lit):
    ember.load_checkpoint(lit / "attrdict.ckpt")
    with pytest.raises(Exception, match="AttributeDict"):
        torch.load(lit / "attrdict.ckpt", weights_only=True)


def test_is_lightning_tells_lightning_files_from_ember_files(lit, emb):
    assert is_lightning(ember.load_checkpoint(lit / EPOCH_END))
    assert not is_lightning(ember.load_checkpoint(emb / EPOCH_END))


# ----------------------------------------------------------------------------- Lightning -> ember


@pytest.mark.parametrize("name", [EPOCH_END, MID_EPOCH, LAST])
def test_converted_lightning_file_resumes_in_ember_where_lightning_does(lit, tmp_path, name):
    expected = _lightning_resume(lit / name, tmp_path / "lightning")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dst = convert(lit / name, tmp_path / "converted.ckpt", to="ember")
    assert _ember_resume(dst, tmp_path / "ember") == expected


@pytest.mark.parametrize("name", [EPOCH_END, MID_EPOCH, LAST])
def test_ember_fit_resumes_directly_from_a_lightning_file_where_lightning_does(lit, tmp_path, name):
    expected = _lightning_resume(lit / name, tmp_path / "lightning")
    assert _ember_resume(lit / name, tmp_path / "ember") == expected


def test_to_ember_of_an_epoch_end_file_is_the_end_of_that_epoch(lit):
    ckpt = to_ember(ember.load_checkpoint(lit / EPOCH_END))
    assert (ckpt["epoch"], ckpt["global_step"], ckpt["loops"]["fit"]) == (0, 5, {"batch": 5, "epoch_done": True})


def test_to_ember_of_a_mid_epoch_file_warns_that_the_data_order_restarts(lit):
    with pytest.warns(UserWarning,
                      match="part-way through epoch 1 .after batch 1, global step 6.*new pass over the data"):
        ckpt = to_ember(ember.load_checkpoint(lit / MID_EPOCH))
    assert (ckpt["epoch"], ckpt["global_step"], ckpt["loops"]["fit"]) == (1, 6, {"batch": 1, "epoch_done": False})


def test_lightning_model_checkpoint_state_moves_to_embers_state_key(lit):
    callbacks = to_ember(ember.load_checkpoint(lit / LAST))["callbacks"]
    state = callbacks["ModelCheckpoint[val_loss:min]"]
    assert state["dirpath"] == str(lit)
    assert {c["name"] for c in state["checkpoints"]} == {"epoch=0-step=5.ckpt", "epoch=1-step=10.ckpt"}
    assert state["last"] == "last.ckpt" and state["best_model_path"].startswith(str(lit))
    assert callbacks["ModelCheckpoint"]["dirpath"] == str(lit / "steps")


def test_ember_model_checkpoint_resumes_lightnings_best_model(lit, tmp_path):
    lightning_state = torch.load(lit / LAST, weights_only=True)["callbacks"]
    best = next(s["best_model_path"] for k, s in lightning_state.items()
                if k.startswith("ModelCheckpoint{'monitor': 'val_loss'"))
    dst = convert(lit / LAST, tmp_path / "converted.ckpt", to="ember")
    callback = EmberModelCheckpoint(dirpath=lit, monitor="val_loss", save_top_k=2)
    train, val = _loaders()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _ember_trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(EmberNet(**HPARAMS), train, val, ckpt_path=dst)
    assert callback.best_model_path == best


def test_lightning_gradscaler_state_becomes_amp_scaling_state(lit):
    saved = torch.load(lit / "amp.ckpt", weights_only=True)["MixedPrecision"]
    assert to_ember(ember.load_checkpoint(lit / "amp.ckpt"))["amp_scaling_state"] == saved


def test_lightning_weights_only_file_becomes_an_ember_weights_only_file(lit, tmp_path):
    ckpt = ember.load_checkpoint(lit / LAST)
    weights = {k: ckpt[k] for k in ("epoch", "global_step", "pytorch-lightning_version", "state_dict",
                                    "hyper_parameters", "hparams_name", "loops")}  # save_weights_only=True keeps these
    out = to_ember(weights)
    assert "optimizer_states" not in out and "loops" not in out and out["state_dict"] is ckpt["state_dict"]


def test_to_ember_refuses_a_dict_that_is_not_a_lightning_checkpoint():
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint: expected a 'pytorch-lightning_version'"):
        to_ember({"state_dict": {}}, path="x.ckpt")


# ----------------------------------------------------------------------------- ember -> Lightning


@pytest.mark.parametrize("name", [EPOCH_END, MID_EPOCH, LAST])
def test_ember_file_converted_to_lightning_resumes_in_lightning_where_ember_does(emb, tmp_path, name):
    expected = _ember_resume(emb / name, tmp_path / "ember")
    dst = convert(emb / name, tmp_path / "lightning.ckpt", to="lightning")
    assert _lightning_resume(dst, tmp_path / "lightning") == expected


def test_lightning_load_from_checkpoint_reads_an_ember_export(emb, tmp_path):
    dst = convert(emb / LAST, tmp_path / "lightning.ckpt", to="lightning")
    model = LitNet.load_from_checkpoint(dst)
    saved = ember.load_checkpoint(emb / LAST)
    assert dict(model.hparams) == saved["hyper_parameters"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved["state_dict"][k]), k


def test_lightning_model_checkpoint_resumes_embers_best_model(emb, tmp_path):
    best = ember.load_checkpoint(emb / LAST)["callbacks"]["ModelCheckpoint[val_loss:min]"]["best_model_path"]
    dst = convert(emb / LAST, tmp_path / "lightning.ckpt", to="lightning")
    callback = pl.callbacks.ModelCheckpoint(dirpath=emb, monitor="val_loss", save_top_k=2)
    train, val = _loaders()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _lightning_trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(LitNet(**HPARAMS), train, val,
                                                                            ckpt_path=dst)
    assert callback.best_model_path == best


def test_round_trip_ember_lightning_ember_keeps_weights_optimizer_and_position(emb, tmp_path):
    exported = convert(emb / MID_EPOCH, tmp_path / "l.ckpt", to="lightning")
    with pytest.warns(UserWarning, match="new pass over the data"):
        back = convert(exported, tmp_path / "e.ckpt", to="ember")
    before, after = ember.load_checkpoint(emb / MID_EPOCH), ember.load_checkpoint(back)
    assert before["state_dict"].keys() == after["state_dict"].keys()
    assert all(torch.equal(v, after["state_dict"][k]) for k, v in before["state_dict"].items())
    assert torch.equal(before["optimizer_states"][0]["state"][0]["exp_avg"],
                       after["optimizer_states"][0]["state"][0]["exp_avg"])
    position = lambda c: (c["epoch"], c["global_step"], c["loops"]["fit"]["batch"], c["loops"]["fit"]["epoch_done"])  # noqa: E731
    assert position(after) == position(before)


def test_gradscaler_state_goes_under_lightnings_precision_key():
    out = to_lightning({"state_dict": {}, "epoch": 0, "global_step": 1, "optimizer_states": [],
                        "loops": {"fit": {"batch": 1, "epoch_done": False}}, "amp_scaling_state": {"scale": 8.0}})
    assert out["MixedPrecision"] == {"scale": 8.0} and out["pytorch-lightning_version"]


def test_convert_without_to_goes_to_the_other_format(lit, emb, tmp_path):
    assert is_lightning(torch.load(convert(emb / LAST, tmp_path / "a.ckpt"), weights_only=True))
    assert ember.checkpoint.format.torch_files.sniff(convert(lit / LAST, tmp_path / "b.ckpt")) == "ember"


def test_convert_refuses_an_unknown_target(emb, tmp_path):
    with pytest.raises(CheckpointError, match="must be 'ember' or 'lightning'; received 'onnx'"):
        convert(emb / LAST, tmp_path / "x", to="onnx")


class LitSeedStyle(pl.LightningModule):
    """The seed's pattern, `__init__(self, hparams)` reading `hparams.hidden`."""

    def __init__(self, hparams):
        super().__init__()
        self.save_hyperparameters(hparams)
        self.l1 = nn.Linear(4, hparams.hidden)


def test_namespace_hparams_reach_lightning_as_attribute_access(tmp_path):
    weights = LitSeedStyle(LightningAttributeDict(hidden=5)).state_dict()
    ckpt = {"ember_version": ember.__version__, "epoch": 0, "global_step": 0, "state_dict": weights,
            "hyper_parameters": {"hidden": 5}, "hparams_type": "Namespace", "hparams_name": "hparams"}
    torch.save(to_lightning(ckpt), tmp_path / "seed.ckpt")
    model = LitSeedStyle.load_from_checkpoint(tmp_path / "seed.ckpt")
    assert model.l1.out_features == 5


def test_lightnings_early_stopping_state_resumes_in_embers_early_stopping(lit, tmp_path):
    saved = torch.load(lit / LAST, weights_only=False)["callbacks"][
        "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"]
    stopper = ember.callbacks.EarlyStopping(monitor="val_loss", patience=5)
    train, val = _loaders()
    _ember_trainer(tmp_path, max_epochs=2, callbacks=[stopper]).fit(EmberNet(**HPARAMS), train, val,
                                                                    ckpt_path=lit / LAST)
    assert (stopper.wait_count, stopper.stopped_epoch) == (saved["wait_count"], saved["stopped_epoch"])
    assert stopper.best_score == float(saved["best_score"])


def test_embers_early_stopping_state_resumes_in_lightnings_early_stopping(tmp_path):
    train, val = _loaders()
    stopper = ember.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)  # no epoch improves
    trainer = _ember_trainer(tmp_path, max_epochs=2, callbacks=[stopper])
    trainer.fit(EmberNet(**HPARAMS), train, val)
    trainer.save_checkpoint(tmp_path / "ember.ckpt")
    dst = convert(tmp_path / "ember.ckpt", tmp_path / "lightning.ckpt", to="lightning")
    theirs = pl.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _lightning_trainer(tmp_path, max_epochs=2, callbacks=[theirs]).fit(LitNet(**HPARAMS), train, val, ckpt_path=dst)
    assert stopper.wait_count >= 1
    assert (theirs.wait_count, theirs.stopped_epoch) == (stopper.wait_count, stopper.stopped_epoch)
    assert float(theirs.best_score) == stopper.best_score
