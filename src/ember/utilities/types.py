"""``lightning.pytorch.utilities.types``: the shapes ``configure_optimizers`` may return, for type hints."""

from __future__ import annotations

from typing import Any, Optional, Sequence, TypedDict, Union

from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ember.loops.optim import SchedulerConfig

LRSchedulerConfig = SchedulerConfig  # what trainer.lr_scheduler_configs holds
LRSchedulerTypeUnion = Union[LRScheduler, ReduceLROnPlateau]
STEP_OUTPUT = Union[Any, dict[str, Any], None]


class LRSchedulerConfigType(TypedDict, total=False):
    """The dict form of a scheduler in ``configure_optimizers``: ``{"scheduler": s, "interval": "step"}``."""

    scheduler: LRSchedulerTypeUnion
    name: Optional[str]
    interval: str
    frequency: int
    reduce_on_plateau: bool
    monitor: Optional[str]
    strict: bool


class OptimizerConfig(TypedDict):
    """``{"optimizer": opt}``."""

    optimizer: Optimizer


class OptimizerLRSchedulerConfig(TypedDict, total=False):
    """``{"optimizer": opt, "lr_scheduler": scheduler or LRSchedulerConfigType, "monitor": "val_loss"}``."""

    optimizer: Optimizer
    lr_scheduler: Union[LRSchedulerTypeUnion, LRSchedulerConfigType]
    monitor: str


OptimizerLRScheduler = Optional[Union[
    Optimizer, Sequence[Optimizer], tuple[Sequence[Optimizer], Sequence[Union[LRSchedulerTypeUnion, SchedulerConfig]]],
    OptimizerConfig, OptimizerLRSchedulerConfig, Sequence[OptimizerConfig], Sequence[OptimizerLRSchedulerConfig]]]

__all__ = ["DistributedDataParallel", "LRSchedulerConfig", "LRSchedulerConfigType", "LRSchedulerTypeUnion",
           "OptimizerConfig", "OptimizerLRScheduler", "OptimizerLRSchedulerConfig", "STEP_OUTPUT"]
