"""Each rank builds CSVLogger and TensorBoardLogger on one folder and starts a fit's logging; prints the
version each rank ends with (they must agree although rank 0 creates version_0 first)."""

import sys

import torch.distributed as dist
from torch import nn

import ember
from ember.loggers import CSVLogger, LoggerGroup, TensorBoardLogger


class Model(ember.Module):
    def __init__(self):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(1, 1)


dist.init_process_group("gloo")
root = sys.argv[1]
loggers = [CSVLogger(root), TensorBoardLogger(root, name="tb")]
LoggerGroup(loggers).start_fit(Model())
dist.barrier()  # rank 0 has written version_0/hparams.yaml by now
print(f"rank {dist.get_rank()} versions {[lg.version for lg in loggers]}", flush=True)
dist.destroy_process_group()
