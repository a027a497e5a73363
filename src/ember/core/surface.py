"""Properties and helpers every LightningModule (and, for hparams, every datamodule) has: ``hparams_initial``,
``dtype``, ``strict_loading``, ``toggled_optimizer``, ``all_gather`` and what ember refuses (``to_tensorrt``)."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch
import torch.distributed as dist

from ember.not_supported import refuse


class HparamsSurface:
    """The hyperparameter names shared by modules and datamodules."""

    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    @property
    def hparams_initial(self) -> dict:
        """A copy of the hyperparameters as ``save_hyperparameters`` (or ``self.hparams = ...``) stored them;
        later changes to ``self.hparams`` do not show here."""
        saved = self.__dict__.get("_hparams_initial")
        return copy.deepcopy(saved if saved is not None else self.hparams)

    def remove_ignored_hparams(self, ignore_list: list[str]) -> None:
        """Drop hyperparameters a base class saved (they will not be in checkpoints).

        Args:
            ignore_list: the names to drop.
        """
        for key in ignore_list:
            self.hparams.pop(key, None)


class ModuleSurface(HparamsSurface):
    """Members of Lightning's LightningModule beyond the hooks and the loop's views."""

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the module's floating-point parameters (float32 for a module without parameters)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    @property
    def on_gpu(self) -> bool:
        """Whether the module's parameters are on a CUDA device."""
        return self.device.type == "cuda"

    @property
    def example_input_array(self) -> Any:
        """An input for ``self(example_input_array)`` (used for summaries and graphs); None when unset."""
        return self.__dict__.get("_example_input_array")

    @example_input_array.setter
    def example_input_array(self, value: Any) -> None:
        self.__dict__["_example_input_array"] = value

    @property
    def strict_loading(self) -> bool:
        """Whether resuming requires the checkpoint's weights to match the module's keys exactly (True by
        default); set it False to load the keys that match and report the rest."""
        return self.__dict__.get("_strict_loading", True)

    @strict_loading.setter
    def strict_loading(self, value: bool) -> None:
        self.__dict__["_strict_loading"] = bool(value)

    @property
    def fabric(self) -> None:
        """None: ember runs modules with its Trainer, never with Lightning Fabric."""
        return None

    @contextlib.contextmanager
    def toggled_optimizer(self, optimizer: Any) -> Iterator[None]:
        """Inside the block, only ``optimizer``'s parameters require grad (``toggle_optimizer`` then
        ``untoggle_optimizer``).

        Args:
            optimizer: one of ``self.optimizers()``.
        """
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def to_tensorrt(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: see ``ember.not_supported`` (use ``to_onnx`` or ``to_torchscript``).

        Args:
            *args: ignored.
            **kwargs: ignored.
        """
        refuse("LightningModule.to_tensorrt")

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Every process's ``data`` stacked along a new first dimension (tensors in dicts, lists and tuples);
        in one process, ``data`` unchanged.

        Args:
            data: a tensor or a structure of tensors (the same shapes on every process).
            group: the process group (all processes when None).
            sync_grads: let gradients flow back through the gather.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return data
        if isinstance(data, dict):
            return type(data)((k, self.all_gather(v, group, sync_grads)) for k, v in data.items())
        if isinstance(data, (list, tuple)):
            return type(data)(self.all_gather(v, group, sync_grads) for v in data)
        tensor = torch.as_tensor(data, device=self.device)
        if sync_grads:
            # deferred: torch.distributed may be unavailable in a build; only for sync_grads
            from torch.distributed.nn.functional import all_gather

            return torch.stack(all_gather(tensor, group=group or dist.group.WORLD))
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.stack(parts)
