"""CUDA paths: pinned snapshots, CUDA random states, loading onto the GPU. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

import ember
from ember.callbacks import ModelCheckpoint
from ember.checkpoint.writer import CheckpointWriter, _Snapshot
from tiny import TinyModel, make_loader, trainer_kwargs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_snapshot_buffers_of_cuda_tensors_are_pinned():
    t = torch.arange(8.0, device="cuda")
    assert _Snapshot().buffer_for("t", t).is_pinned()


def test_background_save_of_cuda_weights_holds_the_values_at_save_time(tmp_path):
    p = torch.nn.Parameter(torch.arange(1024.0, device="cuda"))
    opt = torch.optim.SGD([p], lr=1.0)
    w = CheckpointWriter()
    p.grad = torch.ones_like(p)
    w.save({"p": p}, tmp_path / "c.ckpt", blocking=False, deferred={p.untyped_storage().data_ptr()})
    w.snapshot_barrier()
    opt.step()
    w.wait()
    assert torch.equal(ember.load_checkpoint(tmp_path / "c.ckpt")["p"], torch.arange(1024.0))


def test_load_onto_the_gpu(tmp_path):
    ember.save_checkpoint({"w": torch.ones(3)}, tmp_path / "w.ckpt")
    assert ember.load_checkpoint(tmp_path / "w.ckpt", map_location="cuda")["w"].is_cuda


def test_checkpoint_holds_cuda_random_states_and_resumes_exactly_on_the_gpu(tmp_path):
    torch.backends.cudnn.deterministic = True

    def run(root, ckpt=None):
        ember.seed_everything(0)
        cb = ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1)
        trainer = ember.Trainer(max_epochs=2, accelerator="cuda", precision="16-mixed", checkpoint_callback=cb,
                                **trainer_kwargs(root))
        model = TinyModel(scheduler="step")
        trainer.fit(model, make_loader(), ckpt_path=ckpt)
        return model

    straight = run(tmp_path / "a")
    ckpt = tmp_path / "a" / "epoch=1-step=6.ckpt"
    assert "cuda" in ember.load_checkpoint(ckpt)["rng"]
    resumed = run(tmp_path / "b", str(ckpt))
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))
