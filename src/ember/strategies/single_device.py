"""``lightning.pytorch.strategies.single_device``: one process on one device."""

from __future__ import annotations

from typing import Any

import torch

from ember.distributed.single import SingleDeviceStrategy as _OneProcess
from ember.strategies.strategy import Strategy


class SingleDeviceStrategy(_OneProcess, Strategy):
    """One process on one device (what ``trainer.strategy`` is in a one-process run). ``Trainer(strategy=
    SingleDeviceStrategy("cuda:0"))`` runs like ``Trainer(accelerator="cuda", devices=1)``; ``strategy=
    "single_device"`` like ``devices=1``.

    Args:
        device: where the model runs (``"cpu"``, ``"cuda:0"``, a ``torch.device`` or a CUDA index).
        accelerator: ignored (the device says it); accepted as Lightning does.
    """

    def __init__(self, device: Any = "cpu", accelerator: Any = None, **_: Any) -> None:
        super().__init__(torch.device("cuda", device) if isinstance(device, int) else torch.device(device))
