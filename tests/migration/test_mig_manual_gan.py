"""Mirrors the Lightning docs page "Manual Optimization"
(https://lightning.ai/docs/pytorch/stable/model/manual_optimization.html): a GAN whose training_step
gets ``g_opt, d_opt = self.optimizers()``, calls ``self.manual_backward``, steps and zeroes each
optimizer, toggles them, and steps its LR schedulers at the epoch's last batch
(``self.trainer.is_last_batch``); and the page's gradient accumulation by hand. Only the import
differs; the data are 2-D Gaussian points."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl


class GAN(pl.LightningModule):
    def __init__(self, latent_dim: int = 4, lr: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.G = nn.Sequential(nn.Linear(latent_dim, 16), nn.ReLU(), nn.Linear(16, 2))
        self.D = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        (real,) = batch
        g_opt, d_opt = self.optimizers()
        z = torch.randn(real.size(0), self.hparams.latent_dim)

        # discriminator
        self.toggle_optimizer(d_opt)
        fake = self.G(z).detach()
        ones, zeros = torch.ones(real.size(0), 1), torch.zeros(real.size(0), 1)
        errD = (F.binary_cross_entropy_with_logits(self.D(real), ones)
                + F.binary_cross_entropy_with_logits(self.D(fake), zeros))
        d_opt.zero_grad()
        self.manual_backward(errD)
        d_opt.step()
        self.untoggle_optimizer(d_opt)

        # generator
        self.toggle_optimizer(g_opt)
        errG = F.binary_cross_entropy_with_logits(self.D(self.G(z)), ones)
        g_opt.zero_grad()
        self.manual_backward(errG)
        g_opt.step()
        self.untoggle_optimizer(g_opt)

        self.log_dict({"g_loss": errG, "d_loss": errD}, prog_bar=True)

        if self.trainer.is_last_batch:
            for sch in self.lr_schedulers():
                sch.step()

    def configure_optimizers(self):
        g_opt = torch.optim.Adam(self.G.parameters(), lr=self.hparams.lr)
        d_opt = torch.optim.Adam(self.D.parameters(), lr=self.hparams.lr)
        return [g_opt, d_opt], [torch.optim.lr_scheduler.StepLR(g_opt, 1, 0.5),
                                torch.optim.lr_scheduler.StepLR(d_opt, 1, 0.5)]


class Accumulating(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        opt = self.optimizers()
        N = 2
        loss = self.layer(x).pow(2).mean() / N
        self.manual_backward(loss)
        if (batch_idx + 1) % N == 0:
            opt.step()
            opt.zero_grad()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(64, 2, generator=g) * 0.5 + 2.0), batch_size=16, shuffle=True)


def test_gan_with_two_optimizers_and_schedulers(tmp_path):
    pl.seed_everything(0)
    model = GAN()
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, enable_progress_bar=False)
    trainer.fit(model, data())
    assert trainer.global_step == 16  # 4 batches x 2 epochs x 2 optimizers
    assert [s.get_last_lr()[0] for s in trainer.lr_schedulers] == [0.0025, 0.0025]
    assert {"g_loss", "d_loss"} <= set(trainer.progress_bar_metrics)
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_accumulation_by_hand_equals_one_big_batch(tmp_path):
    pl.seed_everything(0)
    model = Accumulating()
    start = model.layer.weight.detach().clone(), model.layer.bias.detach().clone()
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False,
                         enable_checkpointing=False)
    trainer.fit(model, loader)
    assert trainer.global_step == 1
    ref = nn.Linear(2, 1)
    with torch.no_grad():
        ref.weight.copy_(start[0])
        ref.bias.copy_(start[1])
    x = loader.dataset.tensors[0]
    ref(x).pow(2).mean().backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.1 * p.grad
    weight, bias = (p.full_tensor() if hasattr(p, "full_tensor") else p for p in (model.layer.weight, model.layer.bias))
    assert torch.allclose(ref.weight, weight) and torch.allclose(ref.bias, bias)  # (FSDP: whole, from the shards)
