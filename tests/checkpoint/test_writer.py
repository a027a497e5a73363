"""Background saves: consistent snapshots, one save in flight, errors that surface, commit-then-delete."""

from __future__ import annotations

import errno
import threading
import time

import pytest
import torch

import ember
from ember.callbacks import ModelCheckpoint
from ember.checkpoint.format import container
from ember.checkpoint import writer
from ember.checkpoint.writer import CheckpointWriter
from tiny import TinyModel, make_loader, trainer_kwargs


def slow_writes(monkeypatch, seconds=0.2):
    real = container.write

    def slow(f, tree, tensors, **kw):
        time.sleep(seconds)
        real(f, tree, tensors, **kw)

    monkeypatch.setattr(container, "write", slow)


def failing_writes(monkeypatch, error):
    def fail(f, tree, tensors, **kw):
        f.write(b"partial")
        raise error

    monkeypatch.setattr(container, "write", fail)


def test_background_save_returns_before_the_file_is_written(tmp_path, monkeypatch):
    slow_writes(monkeypatch)
    w = CheckpointWriter()
    w.save({"x": torch.ones(3)}, tmp_path / "a.ckpt", blocking=False)
    assert not (tmp_path / "a.ckpt").exists() and w.in_flight
    w.wait()
    assert torch.equal(ember.load_checkpoint(tmp_path / "a.ckpt")["x"], torch.ones(3))


def test_the_next_save_waits_for_the_one_in_flight(tmp_path, monkeypatch):
    slow_writes(monkeypatch)
    w = CheckpointWriter()
    w.save({"x": torch.ones(3)}, tmp_path / "a.ckpt", blocking=False)
    w.save({"x": torch.zeros(3)}, tmp_path / "b.ckpt", blocking=False)
    assert (tmp_path / "a.ckpt").exists()  # committed before the second save began
    w.wait()


def test_snapshot_is_unchanged_by_what_training_does_next(tmp_path, monkeypatch):
    slow_writes(monkeypatch)
    param = torch.nn.Parameter(torch.arange(4.0))
    opt = torch.optim.SGD([param], lr=1.0)
    w = CheckpointWriter()
    opt.register_step_pre_hook(lambda *_: w.snapshot_barrier())
    param.grad = torch.ones(4)
    w.save({"w": param, "buffer": param.grad}, tmp_path / "s.ckpt", blocking=False,
           deferred={param.untyped_storage().data_ptr()})
    param.grad.mul_(5)  # buffers were copied at save time
    opt.step()           # waits for the deferred copy, then changes the weights
    w.wait()
    saved = ember.load_checkpoint(tmp_path / "s.ckpt")
    assert torch.equal(saved["w"], torch.arange(4.0)) and torch.equal(saved["buffer"], torch.ones(4))
    assert torch.equal(param.detach(), torch.arange(4.0) - 5)


def test_in_place_change_of_a_deferred_tensor_fails_the_save_loudly(tmp_path, monkeypatch):
    t = torch.zeros(3)
    started = threading.Event()
    real_copy = writer._Snapshot.copy

    def late_copy(self, names, tensors, out, **kw):
        if names and threading.current_thread().name == "ember-checkpoint-writer":
            started.set()
            time.sleep(0.2)
        real_copy(self, names, tensors, out, **kw)

    monkeypatch.setattr(writer._Snapshot, "copy", late_copy)
    w = CheckpointWriter()
    w.save({"t": t}, tmp_path / "t.ckpt", blocking=False, deferred={t.untyped_storage().data_ptr()})
    started.wait(5)
    t.add_(1)  # outside any optimizer step, while the writer copies
    with pytest.raises(ember.CheckpointError, match="changed in place while the background save was copying it"):
        w.wait()
    assert not (tmp_path / "t.ckpt").exists()


def test_the_training_thread_helps_copy_at_the_barrier(tmp_path, monkeypatch):
    copied_by = []
    real_copy = writer._Snapshot.copy

    def record(self, names, tensors, out, **kw):
        copied_by.extend((n, threading.current_thread().name) for n in names)
        if threading.current_thread().name == "ember-checkpoint-writer":
            time.sleep(0.1)
        real_copy(self, names, tensors, out, **kw)

    monkeypatch.setattr(writer._Snapshot, "copy", record)
    params = [torch.full((4,), float(i)) for i in range(6)]
    w = CheckpointWriter()
    w.save({"p": params}, tmp_path / "p.ckpt", blocking=False,
           deferred={p.untyped_storage().data_ptr() for p in params})
    w.snapshot_barrier()
    w.wait()
    helpers = {thread for _, thread in copied_by}
    assert helpers == {"ember-checkpoint-writer", threading.main_thread().name}
    assert sorted(n for n, _ in copied_by) == sorted(f"p.{i}" for i in range(6))
    assert [t.tolist() for t in ember.load_checkpoint(tmp_path / "p.ckpt")["p"]] == [[float(i)] * 4 for i in range(6)]


def test_a_failed_background_save_surfaces_at_wait_with_its_file(tmp_path, monkeypatch):
    failing_writes(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    w = CheckpointWriter()
    w.save({"x": torch.ones(2)}, tmp_path / "full.ckpt", blocking=False)
    with pytest.raises(ember.CheckpointError, match="no space left.*full.ckpt"):
        w.wait()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    w.wait()  # reported once


def test_a_failed_background_save_surfaces_at_the_next_save(tmp_path, monkeypatch):
    failing_writes(monkeypatch, OSError(errno.EIO, "I/O error"))
    w = CheckpointWriter()
    w.save({"x": torch.ones(2)}, tmp_path / "a.ckpt", blocking=False)
    with pytest.raises(ember.CheckpointError, match="a.ckpt"):
        w.save({"x": torch.ones(2)}, tmp_path / "b.ckpt", blocking=False)


def test_unstorable_state_fails_before_anything_is_written(tmp_path):
    w = CheckpointWriter()
    with pytest.raises(ember.CheckpointError, match="fn"):
        w.save({"fn": lambda: 1}, tmp_path / "x.ckpt", blocking=False)
    assert not w.in_flight and list(tmp_path.iterdir()) == []


def test_fit_returns_only_after_the_last_save_is_committed(tmp_path, monkeypatch):
    slow_writes(monkeypatch, 0.3)
    trainer = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    trainer.fit(TinyModel(), make_loader())
    container.verify_file(tmp_path / "checkpoints" / "epoch=0-step=4.ckpt")
    assert not trainer.checkpoint_writer.in_flight


def test_fit_raises_a_background_save_error(tmp_path, monkeypatch):
    failing_writes(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    trainer = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    with pytest.raises(ember.CheckpointError, match="epoch=0-step=4.ckpt"):
        trainer.fit(TinyModel(), make_loader())


def test_top_k_keeps_the_worse_file_when_the_better_one_fails(tmp_path, monkeypatch):
    class Scores(TinyModel):
        def validation_step(self, batch, batch_idx):
            self.log("score", [3.0, 1.0][self.current_epoch])

    real = writer.write_file

    def fail_epoch_1(path, tree, tensors, **kw):
        if "epoch=1" in str(path):
            raise ember.CheckpointError(f"could not save {path}: disk full")
        return real(path, tree, tensors, **kw)

    monkeypatch.setattr(writer, "write_file", fail_epoch_1)
    cb = ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}", monitor="score", save_top_k=1)
    trainer = ember.Trainer(max_epochs=2, checkpoint_callback=cb, **trainer_kwargs(tmp_path))
    with pytest.raises(ember.CheckpointError, match="epoch=1.ckpt"):
        trainer.fit(Scores(), make_loader(), make_loader(n=8, shuffle=False))
    container.verify_file(tmp_path / "c" / "epoch=0.ckpt")  # the worse file stays: the better one failed


def test_manual_non_blocking_save_and_wait(tmp_path):
    trainer = ember.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    model = TinyModel()
    trainer.fit(model, make_loader())
    trainer.save_checkpoint(tmp_path / "m.ckpt", blocking=False)
    trainer.wait_for_checkpoints()
    loaded = TinyModel.load_from_checkpoint(tmp_path / "m.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters()))


def test_checkpoints_written_in_the_background_resume_exactly(tmp_path):
    def run(root, ckpt=None):
        ember.seed_everything(0)
        cb = ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1)
        trainer = ember.Trainer(max_epochs=2, checkpoint_callback=cb, **trainer_kwargs(root))
        model = TinyModel(scheduler="step")
        trainer.fit(model, make_loader(), ckpt_path=ckpt)
        return model

    straight = run(tmp_path / "a")
    resumed = run(tmp_path / "b", str(tmp_path / "a" / "epoch=0-step=3.ckpt"))
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))
