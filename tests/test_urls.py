"""Checkpoints at URLs: every place that takes a path takes an fsspec URL too; tested on memory://
and on a real S3 API (the moto server started by the s3_bucket fixture)."""

from __future__ import annotations

import uuid

import pytest
import torch

import ember
from ember.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from ember.checkpoint.storage.locations import open_store
from tiny import TinyModel, make_loader, trainer_kwargs

fsspec = pytest.importorskip("fsspec")


def fit(root, epochs, *, ckpt_path=None, model=None, **kw):
    trainer = ember.Trainer(max_epochs=epochs, **{**trainer_kwargs(root), **kw})
    trainer.fit(model or TinyModel(), make_loader(), make_loader(n=8, shuffle=False), ckpt_path=ckpt_path)
    return trainer


def listing(url):
    return sorted(open_store(url).list(""))


@pytest.fixture
def memory_root():
    return f"memory://ember-{uuid.uuid4().hex[:8]}"


def test_a_memory_url_root_writes_there_and_not_to_a_local_folder(memory_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit(memory_root, 1, logger=True)
    logs = memory_root + "/lightning_logs"  # a URL root: the default logger is a CSVLogger (it writes through fsspec)
    assert listing(logs + "/version_0/checkpoints") == ["epoch=0-step=4.ckpt"]
    assert listing(logs) == ["version_0/checkpoints/epoch=0-step=4.ckpt", "version_0/hparams.yaml",
                             "version_0/metrics.csv"]
    assert list(tmp_path.iterdir()) == []  # no folder named "memory:" in the working directory


def test_save_and_load_round_trip_through_s3(s3_bucket):
    trainer = fit(s3_bucket + "/run", 1)
    url = s3_bucket + "/manual/model.ckpt"
    trainer.save_checkpoint(url)
    loaded = TinyModel.load_from_checkpoint(url)
    for a, b in zip(trainer.module.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    assert ember.load_checkpoint(url)["global_step"] == 4


def test_fit_resumes_from_last_on_s3(s3_bucket):
    root = s3_bucket + "/run"
    fit(root, 1)
    trainer = fit(root, 2, ckpt_path="last")
    assert trainer.ckpt_path == root + "/checkpoints/epoch=0-step=4.ckpt"
    assert trainer.global_step == 8
    assert listing(root + "/checkpoints") == ["epoch=1-step=8.ckpt"]


class Scored(TinyModel):
    def validation_step(self, batch, batch_idx):
        self.log("score", [5.0, 3.0, 4.0, 1.0, 2.0, 0.5][self.current_epoch])


def test_top_k_retention_on_s3_survives_two_resumes(s3_bucket):
    folder = s3_bucket + "/run/ckpts"

    def top2():
        return ModelCheckpoint(dirpath=folder, filename="{epoch}", monitor="score", save_top_k=2, save_last=True)

    for epochs in (2, 4, 6):
        fit(s3_bucket + "/run", epochs, ckpt_path="last", model=Scored(), checkpoint_callback=top2())
    assert listing(folder) == ["epoch=3.ckpt", "epoch=5.ckpt", "last.ckpt"]
    assert ember.load_checkpoint(folder + "/last.ckpt")["epoch"] == 5


def test_a_corrupted_s3_object_is_refused_by_load_and_verify(s3_bucket, capsys):
    import s3fs

    url = s3_bucket + "/model.ckpt"
    fit(s3_bucket + "/run", 1).save_checkpoint(url)
    fs = s3fs.S3FileSystem()
    data = bytearray(fs.cat(url))
    data[-5] ^= 0x04
    fs.pipe(url, bytes(data))
    with pytest.raises(ember.CheckpointCorruptError, match="model.ckpt"):
        ember.load_checkpoint(url)
    from ember.cli import main

    assert main(["ckpt", "verify", url]) == 1
    assert "model.ckpt" in capsys.readouterr().out


def test_on_exception_checkpoint_saves_to_a_url(memory_root):
    class Boom(TinyModel):
        def training_step(self, batch, batch_idx):
            if self.global_step == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    with pytest.raises(RuntimeError, match="boom"):
        fit(memory_root, 1, model=Boom(), callbacks=[OnExceptionCheckpoint(memory_root + "/crash")])
    assert ember.load_checkpoint(memory_root + "/crash/on_exception.ckpt")["global_step"] == 2


def test_ember_ckpt_ls_lists_checkpoints_on_s3(s3_bucket, capsys):
    from ember.cli import main

    fit(s3_bucket + "/run", 2, checkpoint_callback=ModelCheckpoint(dirpath=s3_bucket + "/run/c", save_top_k=-1))
    assert main(["ckpt", "ls", s3_bucket + "/run/c", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "epoch=0-step=4.ckpt" in out and "epoch=1-step=8.ckpt" in out and out.count("OK") == 2


def test_a_fit_cleans_up_incomplete_uploads_left_by_a_killed_writer(s3_bucket):
    import s3fs

    fs = s3fs.S3FileSystem()
    bucket = s3_bucket[len("s3://"):]
    fs.call_s3("create_multipart_upload", Bucket=bucket, Key="run/checkpoints/epoch=9-step=99.ckpt")
    assert fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")
    fit(s3_bucket + "/run", 1)
    assert not fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")  # moto dates uploads in 2010
