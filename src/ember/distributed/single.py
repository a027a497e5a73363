"""``SingleDeviceStrategy``: what ``trainer.strategy`` is when the run has one process.

Lightning's Trainer always has a strategy object, and programs read it (``trainer.strategy.root_device``,
``.world_size``, ``.broadcast(...)``) whatever they run on. A run of many processes has a
``DDPStrategy`` or ``FSDPStrategy``; a run of one has this: the same commonly read names, each
answering for a process that runs alone.
"""

from __future__ import annotations

from typing import Any

import torch

from ember.errors import MisconfigurationError

_OPS = ("mean", "sum", "max", "min")


class SingleDeviceStrategy:
    """One process on one device: rank 0 of 1; collectives return their input."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def __repr__(self) -> str:
        return f"SingleDeviceStrategy(device={str(self.device)!r})"

    @property
    def root_device(self) -> torch.device:
        """The device the model runs on."""
        return self.device

    world_size = 1
    global_rank = 0
    local_rank = 0
    node_rank = 0
    num_nodes = 1
    is_global_zero = True

    def barrier(self, name: str | None = None) -> None:
        """Nothing to wait for (``name`` is accepted as Lightning's is)."""

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` itself: this process is every rank."""
        return obj

    def reduce(self, value: Any, op: str | None = None, *, group: Any = None,
               reduce_op: str | None = None) -> torch.Tensor:
        """``value`` as a tensor (a copy): reduced over one process. ``op`` (or Lightning's keyword
        ``reduce_op``) is checked as in a run of many processes."""
        name = _op_name(op, reduce_op)
        t = value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(value)
        if name == "mean" and not (t.is_floating_point() or t.is_complex()):
            t = t.to(torch.get_default_dtype())
        return t

    def all_gather(self, tensor: torch.Tensor, group: Any = None, sync_grads: bool = False) -> torch.Tensor:
        """``tensor`` itself, as Lightning's single-device strategy returns it."""
        return tensor


def _op_name(op: str | None, reduce_op: str | None) -> str:
    """One reduce op name from ember's positional ``op`` or Lightning's ``reduce_op=`` (default "mean")."""
    if op is not None and reduce_op is not None and op != reduce_op:
        raise MisconfigurationError(f"reduce() got op={op!r} and reduce_op={reduce_op!r}; pass one of them.")
    name = str(op or reduce_op or "mean").lower()
    name = {"avg": "mean", "sum": "sum", "max": "max", "min": "min", "mean": "mean"}.get(name, name)
    if name not in _OPS:
        given = f"op={op!r}" if op is not None else f"reduce_op={reduce_op!r}"
        raise MisconfigurationError(f"reduce op must be one of {list(_OPS)} (or 'avg'); received {given}.")
    return name
