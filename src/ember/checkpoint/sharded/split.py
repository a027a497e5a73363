"""Split a checkpoint state into the tensors that go through DCP and a JSON state tree for the rest.

Every tensor leaf (a plain tensor, a Parameter or a DTensor) is replaced by a small stand-in and the
state is encoded by ember's codec exactly as a single-file checkpoint is; each stand-in's name in the
tree (``state_dict.l1.weight``, ``optimizer_states.0.state.0.exp_avg`` ...) becomes the tensor's FQN
for DCP. Decoding the tree with the real tensors under those names gives back the state, with every
non-tensor value (epoch, hparams, callbacks' state, tuples, big ints ...) of exactly its saved type.
numpy arrays are encoded by the codec itself; their data goes through DCP as plain tensors.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from typing import Any, Mapping

import torch

from ember.checkpoint.format import codec
from ember.errors import CheckpointError


def is_dtensor(t: Any) -> bool:
    module = sys.modules.get("torch.distributed.tensor")  # not imported here: a DTensor means it was
    return module is not None and isinstance(t, module.DTensor)


def _check_leaf(t: torch.Tensor, path: str) -> None:
    local = t.to_local() if is_dtensor(t) else t
    if not is_dtensor(t) and type(t) not in (torch.Tensor, torch.nn.Parameter):
        raise CheckpointError(f"{path}: a {type(t).__name__} cannot be stored in a sharded checkpoint; "
                              "store plain tensors or DTensors")
    if local.layout != torch.strided or local.is_quantized or local.is_meta or local.is_nested:
        raise CheckpointError(f"{path}: a {local.layout} {'meta ' if local.is_meta else ''}tensor cannot be stored; "
                              "store dense tensors with data (materialise, dequantize or .to_dense() it first)")


class _StandIns:
    """Replaces each tensor object by one stand-in (the same object twice -> the same stand-in)."""

    def __init__(self) -> None:
        self.by_id: dict[int, torch.Tensor] = {}
        self.real: dict[int, torch.Tensor] = {}  # the stand-in's data address -> the real tensor

    def swap(self, v: Any, path: str, depth: int = 0) -> Any:
        if isinstance(v, torch.Tensor):
            _check_leaf(v, path)
            s = self.by_id.get(id(v))
            if s is None:
                s = torch.zeros(1, dtype=torch.uint8)  # its own memory: never merged with another by the codec
                self.by_id[id(v)], self.real[s.data_ptr()] = s, v
            return s
        if depth > codec.MAX_DEPTH:
            return v  # the codec refuses it with the path
        t = type(v)
        if t is list or t is tuple:
            return t(self.swap(x, f"{path}.{i}", depth + 1) for i, x in enumerate(v))
        if t is dict or t is OrderedDict:
            out = t((k, self.swap(x, f"{path}.{k}", depth + 1)) for k, x in v.items())
            if t is OrderedDict and getattr(v, "_metadata", None) is not None:
                out._metadata = v._metadata  # type: ignore[attr-defined]
            return out
        if t is argparse.Namespace:
            return argparse.Namespace(**{k: self.swap(x, f"{path}.{k}", depth + 1) for k, x in vars(v).items()})
        return v


def split(state: Mapping) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(tree, {fqn: tensor})``: the codec tree of ``state`` and its tensors by name (the state's own
    tensor objects, DTensors included). Raises CheckpointError naming the path of an unstorable value."""
    if type(state) not in (dict, OrderedDict):
        raise CheckpointError(f"a sharded checkpoint state must be a dict, got {type(state).__name__}")
    stand_ins = _StandIns()
    tree, named = codec.flatten(stand_ins.swap(state, "state"))
    tensors = {}
    for name, t in named.items():
        real = stand_ins.real.get(t.data_ptr()) if t.dtype == torch.uint8 and t.shape == (1,) else None
        tensors[name] = t if real is None else real  # numpy arrays' tensors are their own
    return tree, tensors


def join(tree: Any, tensors: Mapping[str, torch.Tensor]) -> dict:
    """The state ``tree`` describes, its tensor nodes resolved in ``tensors`` (checked as loading checks)."""
    return codec.unflatten(tree, tensors)
