"""``map_location`` in every form ``torch.load`` takes it: a device (str or ``torch.device``), a dict
``{saved_location: location}`` or a function ``fn(storage, location) -> storage | None``.

ember files record no device: every tensor is saved from, and read to, the CPU, so its saved
location is ``"cpu"``. A dict moves the tensors to ``map_location["cpu"]`` (when it has that key);
a function is called with each tensor's storage and ``"cpu"`` and the tensor follows the device of
what it returns (``None``: it stays). Tensors shared in the checkpoint stay shared.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Mapping

import torch

__all__ = ["apply_map_location", "check_map_location", "read_location", "weights_device"]


def check_map_location(map_location: Any) -> None:
    if map_location is None or isinstance(map_location, (str, torch.device, dict)) or callable(map_location):
        return
    raise TypeError(
        f"map_location must be None, a device (str or torch.device), a dict {{saved_location: location}} or a "
        f"function (storage, location) -> storage; received {type(map_location).__name__}.")


def read_location(map_location: Any) -> Any:
    """What the reader is given: a device as is; a dict or a function reads to the CPU first."""
    check_map_location(map_location)
    return "cpu" if isinstance(map_location, dict) or callable(map_location) else map_location


def _device_of_dict(mapping: Mapping) -> torch.device | None:
    for src, dst in mapping.items():
        if torch.device(src) == torch.device("cpu"):
            return torch.device(dst)
    return None


def _mover(map_location: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if isinstance(map_location, dict):
        device = _device_of_dict(map_location)
        return None if device is None else (lambda t: t.to(device))
    if callable(map_location) and not isinstance(map_location, (str, torch.device)):
        def move(t: torch.Tensor) -> torch.Tensor:
            result = map_location(t.untyped_storage(), "cpu")
            if result is None:
                return t
            device = getattr(result, "device", None)
            if not isinstance(device, torch.device):
                raise TypeError(f"map_location function returned {type(result).__name__}; expected a storage, "
                                "a tensor or None")
            return t if device == t.device else t.to(device)
        return move
    return None


def apply_map_location(ckpt: Any, map_location: Any) -> Any:
    """Move the tensors of a checkpoint read with ``read_location(map_location)`` where a dict or a
    function ``map_location`` says (containers are updated in place; tuples rebuilt)."""
    move = _mover(map_location)
    if move is None:
        return ckpt
    memo: dict[int, torch.Tensor] = {}

    def walk(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            if id(v) not in memo:
                memo[id(v)] = move(v)
            return memo[id(v)]
        if isinstance(v, dict):
            for k in v:
                v[k] = walk(v[k])
        elif isinstance(v, list):
            v[:] = [walk(x) for x in v]
        elif type(v) is tuple:
            return tuple(walk(x) for x in v)
        elif isinstance(v, argparse.Namespace):
            for k, x in vars(v).items():
                setattr(v, k, walk(x))
        return v

    return walk(ckpt)


def weights_device(state_dict: Mapping[str, Any]) -> torch.device | None:
    """The device of the first tensor of the weights (where Lightning moves a loaded model)."""
    return next((t.device for t in state_dict.values() if isinstance(t, torch.Tensor)), None)
