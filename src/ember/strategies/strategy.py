"""``lightning.pytorch.strategies.strategy``: the base class of ember's strategies."""

from __future__ import annotations

import abc

from ember.distributed.strategy import ParallelStrategy


class Strategy(abc.ABC):
    """How a Trainer places the model and the data on devices and processes. ember's strategies are
    :class:`SingleDeviceStrategy` (one process), ``DDPStrategy`` and ``FSDPStrategy``; ``isinstance(s, Strategy)``
    is True for each. Writing a new strategy by subclassing is not supported: ember's checkpoints need to
    know how the model is laid out."""


Strategy.register(ParallelStrategy)

__all__ = ["Strategy"]
