"""Mirrors "Modify a checkpoint anywhere" of the Lightning docs page "Checkpointing (intermediate)"
(https://lightning.ai/docs/pytorch/stable/common/checkpointing_intermediate.html) and the
``on_save_checkpoint`` / ``on_load_checkpoint`` examples of the LightningModule API page
(https://lightning.ai/docs/pytorch/stable/common/lightning_module.html): values Lightning users put in
the checkpoint dict (tuples, sets, paths, enums) come back as they were, from ember's safe format."""

from __future__ import annotations

import enum
from pathlib import Path

import torch
from torch import nn

import ember as pl
from ember.callbacks import Callback


class Phase(enum.Enum):
    WARMUP = "warmup"
    MAIN = "main"


class LitModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.seen_ids = {3, 1, 2}
        self.restored = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["something_cool_i_want_to_save"] = {
            "ids": self.seen_ids, "frozen": frozenset({"a"}), "shape": (2, 3), "phase": Phase.MAIN,
            "data_dir": Path("/data/run1"), "by_phase": {Phase.WARMUP: 10}}

    def on_load_checkpoint(self, checkpoint):
        self.restored = checkpoint["something_cool_i_want_to_save"]


class Counter(Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1

    def state_dict(self):
        return {"batches": self.batches, "kinds": ("a", "b")}

    def load_state_dict(self, state_dict):
        self.batches, self.kinds = state_dict["batches"], state_dict["kinds"]


def test_checkpoint_hooks_store_python_values_that_come_back_as_they_were(tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1)),
                                       batch_size=4)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=str(tmp_path), callbacks=[Counter()],
                         enable_progress_bar=False, logger=False)
    trainer.fit(LitModel(), data)
    path = trainer.checkpoint_callback.best_model_path

    model = LitModel.load_from_checkpoint(path)
    assert model.restored == {"ids": {1, 2, 3}, "frozen": frozenset({"a"}), "shape": (2, 3), "phase": Phase.MAIN,
                              "data_dir": Path("/data/run1"), "by_phase": {Phase.WARMUP: 10}}
    assert model.restored["phase"] is Phase.MAIN and type(model.restored["ids"]) is set

    resumed = Counter()
    pl.Trainer(max_epochs=2, default_root_dir=str(tmp_path), callbacks=[resumed], enable_progress_bar=False,
               logger=False).fit(LitModel(), data, ckpt_path=path)
    assert resumed.kinds == ("a", "b") and resumed.batches == 8
