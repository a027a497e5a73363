"""A Lightning-style script on ember's Trainer with DDP or FSDP: ``Trainer(accelerator="cpu", devices=2,
strategy="ddp")`` started by torchrun, or as a plain ``python`` process that starts the other rank itself.

A tiny model with dropout; each rank is seeded differently after the model is built, so ranks draw
different dropout masks (a resume that gave a rank another rank's random state would change the
weights). Data: 48 samples, shuffled, batch 4: 6 batches per rank per epoch, 3 epochs.

usage: python trainer_ddp.py ROOT [--strategy ddp|fsdp] [--accelerator cpu|gpu] [--max-epochs E] [--max-steps S]
                             [--resume [PATH]]
                             [--stop-rank R --stop-step S] [--fail-rank R --fail-step S] [--launch N]
                             [--weights-at-start OUT] [--fail-save-rank R] [--every-step] [--configure-model]
                             [--ckpt-dir PATH_OR_URL] [--num-nodes N]
Writes ROOT/final.ckpt (trainer.save_checkpoint, called on every rank) and ROOT/rank<R>.ckpt (each
rank's own weights, whole, and global step) when fit returns; checkpoints go to ROOT/ckpts (save_last).
``--weights-at-start OUT``: rank 0 writes the whole weights as training starts (after a resume's restore).
``--fail-save-rank R``: rank R raises while the first checkpoint is being saved. ``--every-step``: save
after every step (the newest, plus last).
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks import Callback, ModelCheckpoint


class Net(ember.Module):
    def __init__(self, fail_rank: int = -1, fail_step: int = 0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
        self.fail_rank, self.fail_step = fail_rank, fail_step

    def training_step(self, batch, batch_idx):
        if self.trainer.global_rank == self.fail_rank and self.global_step + 1 == self.fail_step:
            raise ValueError(f"boom at step {self.fail_step}")
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


class ShardsItself(Net):
    """A module whose configure_model() shards its layers with the mesh the strategy gives it."""

    calls = 0

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        if self.device_mesh is None:
            raise RuntimeError("configure_model() ran without self.device_mesh")
        type(self).calls += 1
        for layer in (self.net[0], self.net[3]):
            fully_shard(layer, mesh=self.device_mesh)


def whole(model) -> dict:
    """The model's weights as whole tensors (a collective under FSDP, where they are sharded)."""
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class WeightsAtStart(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, module) -> None:
        weights = whole(module)
        if trainer.is_global_zero:
            ember.save_checkpoint({"state_dict": weights}, self.path)


class FailWhileSaving(Callback):
    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_save_checkpoint(self, trainer, module, checkpoint) -> None:
        if trainer.global_rank == self.rank:
            raise ValueError(f"boom while saving step {trainer.global_step}")


class StopOneRank(Callback):
    """One rank alone asks to stop: every rank must stop at that same step."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            trainer.should_stop = True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--strategy", default="ddp")
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--max-epochs", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--resume", nargs="?", const="last", default=None)
    ap.add_argument("--weights-at-start", default=None)
    ap.add_argument("--stop-rank", type=int, default=-1)
    ap.add_argument("--stop-step", type=int, default=0)
    ap.add_argument("--fail-rank", type=int, default=-1)
    ap.add_argument("--fail-step", type=int, default=0)
    ap.add_argument("--launch", type=int, default=0)
    ap.add_argument("--fail-save-rank", type=int, default=-1)
    ap.add_argument("--every-step", action="store_true")
    ap.add_argument("--configure-model", action="store_true")
    ap.add_argument("--ckpt-dir", default=None, help="where checkpoints go (a path or URL; default ROOT/ckpts)")
    ap.add_argument("--num-nodes", type=int, default=1)
    ap.add_argument("--grace", type=float, default=None, help="seconds a rank may take to stop after a peer failed")
    args = ap.parse_args()
    ember.seed_everything(0)
    model = (ShardsItself if args.configure_model else Net)(args.fail_rank, args.fail_step)
    every = {"every_n_train_steps": 1} if args.every_step else {}
    ckpt_dir = args.ckpt_dir or os.path.join(args.root, "ckpts")
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, save_last=True, **every)]
    if args.fail_save_rank >= 0:
        callbacks.append(FailWhileSaving(args.fail_save_rank))
    if args.stop_rank >= 0:
        callbacks.append(StopOneRank(args.stop_rank, args.stop_step))
    if args.weights_at_start:
        callbacks.append(WeightsAtStart(args.weights_at_start))
    strategy = args.strategy
    if args.grace is not None:
        from ember.distributed import DDPStrategy, FSDPStrategy

        strategy = {"ddp": DDPStrategy, "fsdp": FSDPStrategy}[args.strategy](accelerator=args.accelerator,
                                                                             grace=args.grace)
    trainer = ember.Trainer(accelerator=args.accelerator, devices=args.launch or "auto", strategy=strategy,
                            num_nodes=args.num_nodes, max_epochs=args.max_epochs,
                            max_steps=args.max_steps, callbacks=callbacks, enable_progress_bar=False, logger=False,
                            default_root_dir=args.root)
    ember.seed_everything(100 + trainer.global_rank)
    x = torch.randn(48, 6, generator=torch.Generator().manual_seed(1))
    data = TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
    loader = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5))
    trainer.fit(model, loader, ckpt_path=args.resume)
    trainer.save_checkpoint(os.path.join(ckpt_dir if args.ckpt_dir else args.root, "final.ckpt"))
    ember.save_checkpoint({"state_dict": whole(model), "global_step": trainer.global_step,
                           "world_size": trainer.world_size, "configure_model_calls": ShardsItself.calls},
                          os.path.join(args.root, f"rank{trainer.global_rank}.ckpt"))


if __name__ == "__main__":
    main()
