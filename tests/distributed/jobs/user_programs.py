"""Programs shaped as users write them, on 2 ranks under ember's self-launch (``python user_programs.py
ROOT --strategy ddp|fsdp --launch 2``; rank 1 re-runs this command line).

* ``SelfCall``: ``training_step`` and ``validation_step`` call ``self(x)`` (the user's ``forward``), a
  hook calls the model, and (DDP) a submodule is ``torch.compile``d. Fit on defaults (sanity check,
  ``inference_mode=True``) with 64 validation samples, then validate, test and predict.
* ``Manual``: manual optimization, ``self(x)`` and ``manual_backward`` on two optimizers.
* ``Normed`` (DDP): a BatchNorm layer's running statistics after each rank's last training batch, and as
  fit's validation sees them.

Each rank writes ROOT/rank<R>.json: what its steps saw, the synced metrics, the strategy's facts, the
one-process reference mean over all 64 validation samples (rank 0, from the whole weights), and the
manual run's whole weights.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl


def whole(model) -> dict:
    """The model's weights as whole tensors (a collective under FSDP)."""
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class SelfCall(pl.LightningModule):
    def __init__(self, compiled: bool = False) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.head = nn.Linear(8, 1)
        if compiled:
            self.body = torch.compile(self.body, backend="eager")
        self.seen = {"validation": 0, "test": 0, "predict": 0, "hook_calls": 0}

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        with torch.no_grad():
            self(batch[0])  # a hook that calls the model
        self.seen["hook_calls"] += 1

    def validation_step(self, batch, batch_idx):
        x, y = batch
        if not self.trainer.sanity_checking:
            self.seen["validation"] += len(x)
        self.log("val_loss", nn.functional.mse_loss(self(x), y), sync_dist=True)

    def test_step(self, batch, batch_idx):
        self.seen["test"] += len(batch[0])
        self.log("test_samples", float(len(batch[0])), reduce_fx="sum", sync_dist=True)
        self.log("test_loss", nn.functional.mse_loss(self(batch[0]), batch[1]), sync_dist=True)

    def predict_step(self, batch, batch_idx):
        self.seen["predict"] += len(batch[0])
        return batch[0][:, 0]  # the sample's id

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Manual(SelfCall):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt_body, opt_head = self.optimizers()
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.manual_backward(loss)
        opt_body.step()
        opt_head.step()
        opt_body.zero_grad()
        opt_head.zero_grad()
        self.log("train_loss", loss, sync_dist=True)

    def configure_optimizers(self):
        return [torch.optim.SGD(self.body.parameters(), lr=0.05), torch.optim.SGD(self.head.parameters(), lr=0.05)]


class Normed(SelfCall):
    """A BatchNorm layer: each rank's training batches move its running statistics its own way."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.bn_seen = {}

    def forward(self, x):
        return super().forward(self.norm(x))

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.bn_seen["after_training"] = self.norm.running_mean.tolist()

    def validation_step(self, batch, batch_idx):
        self.bn_seen.setdefault("validation", self.norm.running_mean.tolist())


def data(n: int, seed: int) -> TensorDataset:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    x[:, 0] = torch.arange(n, dtype=torch.float32)  # column 0 names the sample
    return TensorDataset(x, x[:, 1:].sum(1, keepdim=True))


def reference_mean(model: SelfCall, weights: dict, ds: TensorDataset) -> float:
    """The mean validation loss over every sample, in this process alone, with ``weights``."""
    plain = SelfCall()
    plain.load_state_dict({k.replace("._orig_mod", ""): v for k, v in weights.items()})
    with torch.no_grad():
        x, y = ds.tensors
        return float(((plain(x) - y) ** 2).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--strategy", default="ddp")
    ap.add_argument("--launch", type=int, default=2)
    args = ap.parse_args()
    pl.seed_everything(0)
    common = dict(accelerator="cpu", devices=args.launch, strategy=args.strategy, logger=False,
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=args.root)
    trainer = pl.Trainer(max_epochs=1, **common)
    model = SelfCall(compiled=args.strategy == "ddp")
    train, val, test, pred = data(32, 1), data(64, 2), data(64, 3), data(63, 4)
    trainer.fit(model, DataLoader(train, batch_size=8, shuffle=True), DataLoader(val, batch_size=8))
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    weights = whole(model)
    s = trainer.strategy
    out = {"fit_metrics": fit_metrics, "seen_fit": dict(model.seen),
           "reference_val_loss": reference_mean(model, weights, val) if trainer.is_global_zero else None,
           "strategy": {"type": type(s).__name__, "root_device": str(s.root_device), "world_size": s.world_size,
                        "global_rank": s.global_rank, "local_rank": s.local_rank, "is_global_zero": s.is_global_zero,
                        "broadcast": s.broadcast(f"from rank {s.global_rank}"), "barrier": s.barrier()},
           "trainer": {"num_devices": trainer.num_devices, "num_nodes": trainer.num_nodes,
                       "node_rank": trainer.node_rank, "device_ids": trainer.device_ids}}
    model.seen.update(validation=0)
    out["validate"] = trainer.validate(model, DataLoader(val, batch_size=8), verbose=False)
    out["test"] = trainer.test(model, DataLoader(test, batch_size=8), verbose=False)
    predictions = trainer.predict(model, DataLoader(pred, batch_size=8))
    out["predicted_ids"] = [int(i) for batch in predictions for i in batch]
    out["seen_eval"] = dict(model.seen)
    manual = Manual()
    pl.Trainer(max_epochs=2, **common).fit(manual, DataLoader(train, batch_size=8, shuffle=True))
    out["manual_weights"] = {k: v.tolist() for k, v in whole(manual).items()}
    out["manual_steps"] = manual.trainer.global_step
    if args.strategy == "ddp":
        normed = Normed()
        pl.Trainer(max_epochs=1, num_sanity_val_steps=0, **common).fit(
            normed, DataLoader(train, batch_size=8, shuffle=True), DataLoader(val, batch_size=8))
        out["bn_seen"] = normed.bn_seen
    with open(os.path.join(args.root, f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
