"""ember demo: train a digits classifier with checkpointing, stop, resume from the last checkpoint.

Uses scikit-learn's bundled digits data set (no download). Run with `make demo`.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks import ModelCheckpoint


class DigitsClassifier(ember.Module):
    def __init__(self, hidden: int = 64, lr: float = 3e-3, dropout: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def digits_loaders():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, val = perm[:1400], perm[1400:]
    return (DataLoader(TensorDataset(x[train], y[train]), batch_size=64, shuffle=True),
            DataLoader(TensorDataset(x[val], y[val]), batch_size=256))


def accuracy(model, loader) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum((model(x).argmax(1) == y).sum().item() for x, y in loader)
    return hits / len(loader.dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="demo_run", help="folder for checkpoints and logs (emptied first)")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args()
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    train, val = digits_loaders()

    def trainer(max_epochs):
        return ember.Trainer(
            max_epochs=max_epochs, default_root_dir=str(root), enable_progress_bar=args.progress,
            callbacks=[ModelCheckpoint(monitor="val_acc", mode="max", save_top_k=2, save_last=True,
                                       filename="{epoch}-{val_acc:.3f}")],
        )

    print("== 1. train for 6 epochs (checkpointing on) ==")
    ember.seed_everything(0)
    first = trainer(6)
    first.fit(DigitsClassifier(), train, val)
    print(f"stopped after epoch {first.current_epoch - 1}, step {first.global_step}: "
          f"val_acc={first.callback_metrics['val_acc']:.3f}")

    print("\n== 2. a new process would do this: resume from the last checkpoint, continue to 12 epochs ==")
    second = trainer(12)
    second.fit(DigitsClassifier(), train, val, ckpt_path="last")
    print(f"resumed from {second.ckpt_path}")
    print(f"finished epoch {second.current_epoch - 1}, step {second.global_step}: "
          f"val_acc={second.callback_metrics['val_acc']:.3f}")

    print("\n== 3. load the best checkpoint for inference ==")
    best = second.checkpoint_callback.best_model_path
    model = DigitsClassifier.load_from_checkpoint(best)
    print(f"best checkpoint: {best}")
    print(f"validation accuracy of the loaded model: {accuracy(model, val):.3f}")

    folder = Path(second.checkpoint_callback.dirpath)  # lightning_logs/version_1/checkpoints: Lightning's layout
    print(f"\ncheckpoints in {folder}:")
    for p in sorted(folder.glob("*.ckpt")):
        print(f"  {p.name:28s} {p.stat().st_size / 1024:6.1f} KiB")
    print("  (the 2 best by val_acc and last.ckpt of this run; the first run's files stay in its version_0 folder)")
    print(f"metrics logged to {second.log_dir} (TensorBoard: tensorboard --logdir {root / 'lightning_logs'})")

    print(f"\n== 4. what a checkpoint holds: ember ckpt inspect {folder / 'last.ckpt'} ==")
    from ember.cli import main as ember_cli

    ember_cli(["ckpt", "inspect", str(folder / "last.ckpt")])
    print(f"\ndone in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
