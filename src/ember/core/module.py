"""ember.Module: a torch.nn.Module with training hooks, logging, hyperparameters and checkpoint loading."""

from __future__ import annotations

import copy
import functools
import os
import warnings
from argparse import Namespace
from typing import Any, Mapping

import torch
from torch import nn

from ember.checkpoint import resume
from ember.checkpoint.format.maps import apply_map_location, read_location, weights_device
from ember.core.export import to_onnx, to_torchscript
from ember.core.hooks import ModelHooks
from ember.core.init_args import (  # noqa: F401
    AttributeDict,
    _init_kwargs_from_checkpoint,
    _init_params,
    init_arguments,
    store_hparams,
)
from ember.core.optimizer import ManualOptimization
from ember.core.pickling import dropped_for_pickling
from ember.core.saving import read_hparams_file
from ember.errors import CheckpointMismatchError, MisconfigurationError
from ember.seed import preserved_rng


def _init_with_capture(init):
    """Wrap a subclass __init__: set up nn.Module first and record each level's arguments."""

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        d = self.__dict__
        if "_parameters" not in d:  # the seed's modules may assign before (or without) super().__init__()
            nn.Module.__init__(self)
        d.setdefault("_ember_init_calls", []).append((init, args, kwargs))  # outermost class first
        init(self, *args, **kwargs)

    wrapper._ember_wrapped = True  # noqa: SLF001
    return wrapper


class Module(ManualOptimization, ModelHooks, nn.Module):
    """Subclass this and define ``training_step`` and ``configure_optimizers``.

    Steps: ``training_step``, ``validation_step``, ``test_step``, ``predict_step`` (each
    ``(batch, batch_idx)``, plus ``dataloader_idx`` with several loaders); data:
    ``train/val/test/predict_dataloader()``; every Lightning hook (``ember.core.hooks``).
    ``automatic_optimization = False`` hands the optimizer steps to ``training_step``
    (``self.optimizers()``, ``self.manual_backward(loss)``).

    Args:
        *args: passed to ``torch.nn.Module.__init__`` (normally none).
        **kwargs: passed to ``torch.nn.Module.__init__`` (normally none).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_ember_wrapped", False):
            cls.__init__ = _init_with_capture(init)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "_parameters" not in self.__dict__:
            super().__init__(*args, **kwargs)
        d = self.__dict__
        d.setdefault("_hparams", AttributeDict())
        d.setdefault("_hparams_name", None)
        d.setdefault("_trainer", None)
        d.setdefault("_logged", None)
        d.setdefault("_automatic_optimization", True)

    # ------------------------------------------------------------------ hyperparameters
    @property
    def hparams(self) -> Any:
        """The hyperparameters: what ``self.hparams = ...`` was given, or what ``save_hyperparameters`` saved."""
        return self.__dict__.get("_hparams", AttributeDict())

    @hparams.setter
    def hparams(self, value: Any) -> None:
        if isinstance(value, Namespace):
            hp = value
        elif isinstance(value, Mapping):
            hp = AttributeDict(value)
        else:
            raise MisconfigurationError(
                f"hparams must be an argparse.Namespace or a dict; received {type(value).__name__}. "
                "Wrap the values in a dict, or call self.save_hyperparameters()."
            )
        self.__dict__["_hparams"] = hp
        self.__dict__["_hparams_initial"] = copy.deepcopy(hp)  # hparams_initial
        self.__dict__["_hparams_name"] = self._init_param_holding(value)

    def _init_param_holding(self, value: Any) -> str | None:
        """The name of the __init__ argument that received ``value`` as a whole, if any."""
        for name, arg in init_arguments(self).items():
            if arg is value:
                return name
        return None

    def __getstate__(self) -> dict[str, Any]:
        return dropped_for_pickling(self.__dict__)  # as Lightning: pickles without the Trainer

    def save_hyperparameters(self, *args: Any, ignore: str | list[str] | None = None) -> None:
        """Save the ``__init__`` arguments as ``self.hparams`` (and so in every checkpoint).

        ``save_hyperparameters()`` takes them all; ``save_hyperparameters("lr", "width")`` some;
        ``save_hyperparameters(namespace_or_dict)`` that object; ``ignore=[...]`` leaves names out.

        Args:
            *args: names of ``__init__`` arguments to save (an unknown name raises ``MisconfigurationError``),
                or one dict/``argparse.Namespace`` saved as it is.
            ignore: a name, or names, of ``__init__`` arguments not to save.
        """
        if len(args) == 1 and isinstance(args[0], (Mapping, Namespace)):
            self.hparams = args[0]
            return
        if not self.__dict__.get("_ember_init_calls"):
            raise MisconfigurationError(
                "save_hyperparameters() must be called inside __init__ of an ember.Module subclass."
            )
        store_hparams(self, init_arguments(self), args, ignore)
        self.__dict__["_hparams_name"] = None

    # ------------------------------------------------------------------ trainer views
    @property
    def trainer(self):
        """The Trainer fitting this module (None outside fit)."""
        return self.__dict__.get("_trainer")

    @trainer.setter
    def trainer(self, trainer) -> None:
        self.__dict__["_trainer"] = trainer

    @property
    def current_epoch(self) -> int:
        t = self.trainer
        return t.current_epoch if t is not None else 0

    @property
    def global_step(self) -> int:
        t = self.trainer
        return t.global_step if t is not None else 0

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def on_gpu(self) -> bool:
        """Whether the module's parameters are on a CUDA device (Lightning's ``on_gpu``)."""
        return self.device.type == "cuda"

    # ------------------------------------------------------------------ logging
    def log(self, name: str, value: Any, prog_bar: bool = False, logger: bool | None = None,
            on_step: bool | None = None, on_epoch: bool | None = None, reduce_fx: Any = "mean",
            enable_graph: bool = False, sync_dist: bool = False, sync_dist_group: Any = None,
            add_dataloader_idx: bool = True, batch_size: int | None = None, metric_attribute: str | None = None,
            rank_zero_only: bool = False) -> None:
        """Record a metric, as Lightning's ``LightningModule.log``: in ``training_step`` per step, in
        validation/test steps and epoch hooks the epoch's value (``reduce_fx``: mean weighted by
        batch size, sum, max, min); both levels give ``name_step`` and ``name_epoch``. ``value`` may be a
        metric object (``update``/``compute``/``reset``), computed and reset at the epoch's end.

        Args:
            name: the metric's key.
            value: a number, a scalar tensor or a metric object.
            prog_bar: also show the value in the progress bar.
            logger: send it to the Trainer's loggers (None: True).
            on_step: log the step's value (None: Lightning's default for the hook, True in ``training_step``).
            on_epoch: log the epoch's reduced value (None: Lightning's default, True outside ``training_step``).
            reduce_fx: how the epoch's value is reduced: "mean" (weighted by ``batch_size``), "sum", "max", "min".
            enable_graph: accepted for Lightning's API; values are always detached.
            sync_dist: reduce the value across processes.
            sync_dist_group: accepted for Lightning's API; the whole world is reduced over.
            add_dataloader_idx: suffix the name with ``/dataloader_idx_N`` when there are several loaders.
            batch_size: the batch's size for the weighted mean (None: inferred from the batch).
            metric_attribute: accepted for Lightning's API (the attribute holding a metric object).
            rank_zero_only: accepted for Lightning's API.

        Raises ``MisconfigurationError`` when called outside a Trainer run.
        """
        sink = self.__dict__.get("_logged")
        if sink is None and self.__dict__.get("_trainer") is None:  # Lightning: a warning, and nothing logged
            warnings.warn("You are trying to `self.log()` but the `self.trainer` reference is not registered on the "
                          "model yet. This is most likely because the model hasn't been passed to the `Trainer`",
                          stacklevel=2)
            return
        if sink is None:
            raise MisconfigurationError(
                f"self.log({name!r}, ...) was called outside trainer.fit() (or validate/test); log from a step "
                "or a hook the Trainer runs, e.g. training_step or validation_step.")
        sink(name, value, prog_bar=prog_bar, logger=True if logger is None else logger, on_step=on_step,
             on_epoch=on_epoch, reduce_fx=reduce_fx, sync_dist=sync_dist, add_dataloader_idx=add_dataloader_idx,
             batch_size=batch_size)

    def log_dict(self, dictionary: Mapping[str, Any], prog_bar: bool = False, logger: bool | None = None,
                 on_step: bool | None = None, on_epoch: bool | None = None, reduce_fx: Any = "mean",
                 enable_graph: bool = False, sync_dist: bool = False, sync_dist_group: Any = None,
                 add_dataloader_idx: bool = True, batch_size: int | None = None, rank_zero_only: bool = False) -> None:
        """Record several metrics at once: ``self.log(key, value, ...)`` for each item of ``dictionary``.

        Args:
            dictionary: metric names to values (a dict, or a torchmetrics ``MetricCollection``).
            prog_bar: also show the value in the progress bar.
            logger: send it to the Trainer's loggers (None: True).
            on_step: log the step's value (None: Lightning's default for the hook, True in ``training_step``).
            on_epoch: log the epoch's reduced value (None: Lightning's default, True outside ``training_step``).
            reduce_fx: how the epoch's value is reduced: "mean" (weighted by ``batch_size``), "sum", "max", "min".
            enable_graph: accepted for Lightning's API; values are always detached.
            sync_dist: reduce the value across processes.
            sync_dist_group: accepted for Lightning's API; the whole world is reduced over.
            add_dataloader_idx: suffix the name with ``/dataloader_idx_N`` when there are several loaders.
            batch_size: the batch's size for the weighted mean (None: inferred from the batch).
            rank_zero_only: accepted for Lightning's API.
        """
        for k, v in dictionary.items():  # a torchmetrics MetricCollection gives its metrics by name
            self.log(k, v, prog_bar=prog_bar, logger=logger, on_step=on_step, on_epoch=on_epoch, reduce_fx=reduce_fx,
                     sync_dist=sync_dist, add_dataloader_idx=add_dataloader_idx, batch_size=batch_size)

    # ------------------------------------------------------------------ hooks (override)
    def training_step(self, batch: Any, batch_idx: int):
        """Compute and return the loss of one training batch (a tensor, a dict with ``"loss"``, or None to skip).

        Args:
            batch: the batch the training loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
        """
        raise MisconfigurationError(
            f"{type(self).__name__} has no training_step(batch, batch_idx); define one that returns the loss."
        )

    def configure_optimizers(self):
        """Return the optimizer(s), and optionally LR schedulers, as Lightning accepts them."""
        raise MisconfigurationError(
            f"{type(self).__name__} has no configure_optimizers(); define one that returns an optimizer."
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Add to (or edit) the checkpoint dict before it is written.

        Args:
            checkpoint: the dict about to be saved; edit it in place.
        """

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Read what on_save_checkpoint added, before the weights are loaded.

        Args:
            checkpoint: the loaded checkpoint dict.
        """

    # ------------------------------------------------------------------ loading
    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path,
        map_location=None,
        strict: bool = True,
        hparams_file=None,
        storage_options: dict | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ):
        """Build the model from the checkpoint (a path or a URL) and load its weights.

        ``weights_only`` changes nothing (ember files hold no pickle; Lightning files: a restricted unpickler).

        ``map_location`` takes what ``torch.load`` takes: a device, a dict ``{"cpu": "cuda:0"}`` or a
        function ``(storage, location) -> storage`` (ember files are saved from the CPU: location
        ``"cpu"``); the model ends on the device of its loaded weights. ``strict=False`` loads the
        keys that match and warns about the others.
        ``hparams_file`` (a ``.yaml`` such as a logger's ``hparams.yaml``, or a ``key,value`` ``.csv``)
        overrides saved hyperparameters; ``kwargs`` override both or supply init arguments not saved;
        ``storage_options`` go to the backend of a URL. The global random state is left as it was
        (building a model draws random numbers).
        """
        location = resume.locate_path(checkpoint_path, storage_options)
        ckpt = resume.read(location, storage_options=storage_options, map_location=read_location(map_location))
        ckpt = apply_map_location(ckpt, map_location)
        if "state_dict" not in ckpt:
            raise CheckpointMismatchError(
                f"{checkpoint_path} holds no model weights (no 'state_dict' entry); it has {sorted(ckpt)}."
            )
        if hparams_file is not None:  # its values win over the checkpoint's; kwargs win over both
            ckpt["hyper_parameters"] = {**(ckpt.get("hyper_parameters") or {}), **read_hparams_file(hparams_file)}
        init_kwargs = _init_kwargs_from_checkpoint(cls, ckpt, kwargs, checkpoint_path)
        with preserved_rng():
            model = cls(**init_kwargs)
        resume.restore_weights(model, ckpt, os.fspath(checkpoint_path), strict=strict)
        device = weights_device(ckpt["state_dict"])
        return model.to(device) if device is not None else model

    # ------------------------------------------------------------------ export
    def to_torchscript(self, file_path=None, method: str = "script", example_inputs=None, **kwargs: Any):
        """This model as TorchScript (``"script"`` or ``"trace"``), saved to ``file_path`` if given.

        Args:
            file_path: where to save the TorchScript module, or None not to save.
            method: "script" (default) or "trace"; another raises ``ValueError``.
            example_inputs: the input traced with (default ``self.example_input_array``).
            **kwargs: passed to ``torch.jit.script`` or ``torch.jit.trace``.
        """
        return to_torchscript(self, file_path, method, example_inputs, **kwargs)

    def to_onnx(self, file_path, input_sample=None, **kwargs: Any) -> None:
        """Export this model to ONNX (needs the ``onnx`` package).

        Args:
            file_path: the ``.onnx`` file to write.
            input_sample: the input exported with (default ``self.example_input_array``).
            **kwargs: passed to ``torch.onnx.export``.
        """
        to_onnx(self, file_path, input_sample, **kwargs)


# TorchScript compiles every property of a scripted module's class (inherited ones too); these read the Trainer.
Module.__jit_unused_properties__ = [n for k in Module.__mro__ if k not in nn.Module.__mro__
                                    for n, v in vars(k).items() if isinstance(v, property)]

LightningModule = Module
