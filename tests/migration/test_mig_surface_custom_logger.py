"""Mirrors "Make a custom logger" of the Lightning docs page "Logging"
(https://lightning.ai/docs/pytorch/stable/extensions/logging.html#make-a-custom-logger): a Logger subclass
with name/version, rank-zero-only log_hyperparams/log_metrics/save/finalize and a rank_zero_experiment."""

from __future__ import annotations

import torch
from torch import nn

import ember as pl
from ember.loggers.logger import Logger, rank_zero_experiment
from ember.utilities import rank_zero_only


class MyLogger(Logger):
    def __init__(self):
        super().__init__()
        self.hparams, self.metrics, self.status = None, [], None

    @property
    def name(self):
        return "MyLogger"

    @property
    def version(self):
        return "0.1"

    @property
    @rank_zero_experiment
    def experiment(self):
        return self.metrics

    @rank_zero_only
    def log_hyperparams(self, params):
        self.hparams = dict(params)

    @rank_zero_only
    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))

    @rank_zero_only
    def save(self):
        super().save()

    @rank_zero_only
    def finalize(self, status):
        self.status = status


class LitModel(pl.LightningModule):
    def __init__(self, width: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, width)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train_loss", loss)
        self.logger.experiment.append(("from the module", batch_idx))  # the experiment object, as Lightning's
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_custom_logger_from_the_docs_receives_everything(tmp_path):
    logger = MyLogger()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer = pl.Trainer(logger=logger, max_epochs=1, log_every_n_steps=1, enable_progress_bar=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(LitModel(), data)
    assert logger.hparams == {"width": 3} and logger.status == "success"
    # Lightning's numbering
    assert [step for step, m in logger.metrics if isinstance(m, dict) and "train_loss" in m] == [0, 1]
    assert ("from the module", 1) in logger.metrics
    assert logger.log_dir is None and trainer.log_dir == str(tmp_path)  # no save_dir: the root holds the run
