"""One pass of ``training_step`` over the training data without gradients: BatchNorm layers in training
mode recompute their running statistics (StochasticWeightAveraging's last step)."""

from __future__ import annotations

import torch

from ember.loops.data import length, limit_batches


def training_pass(trainer, module) -> int:
    """Run ``module.training_step`` on every training batch fit would use (after limit_train_batches),
    in training mode and without gradients; what it logs is dropped. Returns the batches seen."""
    loader = trainer.train_dataloader
    if loader is None:
        return 0
    n = limit_batches(trainer.settings.limit_train_batches, length(loader))
    was_training, logged = module.training, module.__dict__.get("_logged")
    module.train()
    module.__dict__["_logged"] = lambda *args, **kwargs: None  # the pass is not part of the run's metrics
    seen = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= n:
                    break
                batch = trainer._hooks.transfer(batch, trainer.device) if trainer._hooks is not None else batch
                module.training_step(batch, i)
                seen += 1
    finally:
        module.__dict__["_logged"] = logged
        module.train(was_training)
    return seen
