"""Mirrors Lightning's multi-GPU/CPU docs pages "GPU training (intermediate)"
(https://lightning.ai/docs/pytorch/stable/accelerators/gpu_intermediate.html: ``Trainer(accelerator=...,
devices=2, strategy="ddp")``, the script run as a plain ``python train.py``) and the "Logging" page's
``self.log(..., sync_dist=True)`` (https://lightning.ai/docs/pytorch/stable/extensions/logging.html): a
Lightning-style script, run for real as a subprocess; ember starts the second rank itself. Only the
imports differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch.distributed

import ember

SCRIPT = '''
import json
import os
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl


class LitModel(pl.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.layer(x), y), sync_dist=True)
        self.log("rank_mean", float(self.global_rank), sync_dist=True)  # 0.5 on both ranks when synced

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


if __name__ == "__main__":
    root = sys.argv[1]
    pl.seed_everything(42)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, default_root_dir=root,
                         enable_progress_bar=False)
    trainer.fit(LitModel(), DataLoader(data(32, 0), batch_size=4, shuffle=True),
                DataLoader(data(16, 1), batch_size=4))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    with open(os.path.join(root, f"metrics_rank{trainer.global_rank}.json"), "w") as f:
        json.dump({"world_size": trainer.world_size, "global_step": trainer.global_step, "metrics": metrics}, f)
'''

MATRIX_SKIP = "already a 2-rank DDP program: its script starts its own ranks (tests/migration/matrix.py)"

JOB_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
            "NODE_RANK", "TORCHELASTIC_RESTART_COUNT", "EMBER_LAUNCHER_PID")


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_plain_python_ddp_script_syncs_metrics_and_writes_one_checkpoint(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in JOB_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, cwd=tmp_path, timeout=60,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout

    ranks = [json.loads((tmp_path / f"metrics_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["global_step"] for r in ranks] == [8, 8]  # 32 samples / 2 ranks / batch 4, 2 epochs
    assert {"train_loss", "val_loss", "rank_mean"} <= set(ranks[0]["metrics"])
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # every synced value equal on both ranks
    assert ranks[0]["metrics"]["rank_mean"] == 0.5

    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"  # both ranks agreed on one version
    assert os.listdir(folder) == ["epoch=1-step=8.ckpt"]  # written once, by rank 0
    checkpoint = ember.load_checkpoint(folder / "epoch=1-step=8.ckpt")
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (1, 8)
    assert checkpoint["hyper_parameters"] == {"lr": 0.05}
