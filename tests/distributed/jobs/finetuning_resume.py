"""A BaseFinetuning run on 2 ranks (``python finetuning_resume.py ROOT --strategy ddp|fsdp --launch 2``;
rank 1 re-runs this command line): an extractor frozen at first is unfrozen at epochs 1 and 2, each time
as a new param group of Adam. Run "straight" trains 3 epochs; run "first" stops after 2 (``last.ckpt``);
"resumed" continues it to 3 under the same strategy, "crossed" under the other one (a single file from DDP
read into FSDP's shards, or FSDP's folder into DDP), each with a fresh callback.

Every rank reads the whole data (``use_distributed_sampler=False``): under DDP the parameters unfrozen
after the model was wrapped are not all-reduced (docs/DISTRIBUTED.md), so only equal batches keep the
ranks equal. Each rank writes ROOT/rank<R>.json: the resumed optimizers' lrs and each run's whole weights
(summed), and the largest difference of the resumed runs' weights from the straight run's."""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember as pl
from ember.callbacks import ModelCheckpoint
from ember.callbacks.finetuning import BaseFinetuning


class Milestones(BaseFinetuning):
    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.extractor)

    def finetune_function(self, pl_module, epoch, optimizer):
        if epoch in (1, 2):  # the last layer first, then the first
            self.unfreeze_and_add_param_group(pl_module.extractor[2 if epoch == 1 else 0], optimizer)


class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.extractor = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
        self.head = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.head(self.extractor(x)), y)

    def configure_optimizers(self):
        return torch.optim.Adam(filter(lambda p: p.requires_grad, self.parameters()), lr=0.01)


def whole(model) -> dict:
    """The model's weights as whole tensors (a collective under FSDP)."""
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
            for k, v in model.state_dict().items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--strategy", default="ddp")
    ap.add_argument("--launch", type=int, default=2)
    args = ap.parse_args()
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8, shuffle=True)
    last = os.path.join(args.root, "first", "last.ckpt")

    def run(name, epochs, ckpt_path=None, strategy=args.strategy):
        pl.seed_everything(0)
        model = Model()
        ck = ModelCheckpoint(dirpath=os.path.join(args.root, name), save_last=True)
        trainer = pl.Trainer(accelerator="cpu", devices=args.launch, strategy=strategy, max_epochs=epochs,
                             callbacks=[Milestones(), ck], default_root_dir=os.path.join(args.root, name),
                             use_distributed_sampler=False, logger=False, enable_progress_bar=False,
                             enable_model_summary=False)
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return whole(model), trainer

    straight, _ = run("straight", 3)
    run("first", 2)
    resumed, trainer = run("resumed", 3, last)
    crossed, _ = run("crossed", 3, last, {"ddp": "fsdp", "fsdp": "ddp"}[args.strategy])
    out = {"lrs": [g["lr"] for g in trainer.optimizers[0].param_groups],
           "sums": [float(sum(v.double().sum() for v in w.values())) for w in (straight, resumed, crossed)],
           "max_diff": [max(float((straight[k] - w[k]).abs().max()) for k in straight) for w in (resumed, crossed)]}
    with open(os.path.join(args.root, f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
