"""BaseFinetuning and BackboneFinetuning: freeze parts of a model, unfreeze them later with their own
learning rate (Lightning's callbacks).

The param groups added while training are part of the run: their parameter names and settings are
saved under the callback's state (``internal_optimizer_metadata``) and put back into the optimizer
before its state is loaded on resume, so a run resumed after an unfreeze continues with the same groups."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ember.core.callback import Callback
from ember.errors import MisconfigurationError

log = logging.getLogger("ember")
Modules = nn.Module | Iterable  # a module, or an iterable of modules (nested iterables too)


class BaseFinetuning(Callback):
    """Subclass it: ``freeze_before_training(pl_module)`` runs before ``configure_optimizers`` (freeze
    what should not train yet); ``finetune_function(pl_module, epoch, optimizer)`` runs at the start of
    every training epoch, for each optimizer (unfreeze with ``unfreeze_and_add_param_group``).

    Build the optimizer on trainable parameters only, e.g.
    ``Adam(filter(lambda p: p.requires_grad, self.parameters()))``.
    """

    def __init__(self) -> None:
        self._internal_optimizer_metadata: dict[int, list[dict[str, Any]]] = {}
        self._restarting = False
        self._trainer = None

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"internal_optimizer_metadata": {str(k): v for k, v in self._internal_optimizer_metadata.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        meta = state.get("internal_optimizer_metadata", state)
        self._internal_optimizer_metadata = {int(k): [dict(g) for g in v] for k, v in meta.items()}
        self._restarting = True
        self._restore_param_groups()  # before the optimizers' states are loaded (they need the same groups)

    def _restore_param_groups(self) -> None:
        trainer = self._trainer
        if not self._restarting or trainer is None or not trainer.optimizers or trainer.module is None:
            return
        named = dict(trainer.module.named_parameters())
        unfrozen = set()
        for i, optimizer in enumerate(trainer.optimizers):
            if i in self._internal_optimizer_metadata:
                groups = self._internal_optimizer_metadata[i]
                unfrozen.update(n for g in groups[len(optimizer.param_groups):] for n in g["params"])
                optimizer.param_groups = self._apply_mapping_to_param_groups(groups, named)
        # what was unfrozen before the checkpoint trains again (freeze_before_training froze it anew)
        names = {id(p): n for n, p in trainer.module.named_parameters()}
        for module in trainer.module.modules():
            if any(names.get(id(p)) in unfrozen for p in module.parameters(recurse=False)):
                self.make_trainable(module)
        self._restarting = False

    @staticmethod
    def _apply_mapping_to_param_groups(param_groups: list[dict[str, Any]], mapping: dict) -> list[dict[str, Any]]:
        """Param groups with each entry of ``params`` looked up in ``mapping`` (parameter <-> name)."""
        out = []
        for group in param_groups:
            settings = {k: v for k, v in group.items() if k != "params"}
            try:
                settings["params"] = [mapping[p] for p in group["params"]]
            except KeyError as e:
                raise MisconfigurationError(
                    f"a param group saved by {BaseFinetuning.__name__} names parameter {e.args[0]!r}, which the "
                    f"model does not have (it has {sorted(str(k) for k in mapping)[:8]}...); resume with the model "
                    "that wrote the checkpoint.") from None
            out.append(settings)
        return out

    def _store(self, pl_module, opt_idx: int, num_param_groups: int, current_param_groups: list[dict]) -> None:
        mapping = {p: n for n, p in pl_module.named_parameters()}
        if opt_idx not in self._internal_optimizer_metadata:
            self._internal_optimizer_metadata[opt_idx] = self._apply_mapping_to_param_groups(current_param_groups,
                                                                                             mapping)
        elif num_param_groups != len(current_param_groups):
            self._internal_optimizer_metadata[opt_idx].extend(
                self._apply_mapping_to_param_groups(current_param_groups[num_param_groups:], mapping))

    # ---------------------------------------------------------------- hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer
        if stage == "fit":
            self.freeze_before_training(pl_module)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._restore_param_groups()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        for i, optimizer in enumerate(trainer.optimizers):
            before = len(optimizer.param_groups)
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
            self._store(pl_module, i, before, optimizer.param_groups)

    def finetune_function(self, pl_module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Override: unfreeze modules (``unfreeze_and_add_param_group``) when ``epoch`` comes.

        Args:
            pl_module: the LightningModule being trained.
            epoch: the training epoch about to start (``trainer.current_epoch``, from 0).
            optimizer: one of the Trainer's optimizers (the hook runs once for each).
        """

    def freeze_before_training(self, pl_module) -> None:
        """Override: freeze modules (``self.freeze(pl_module.backbone)``) before the optimizers are made.

        Args:
            pl_module: the LightningModule about to be trained.
        """

    # ---------------------------------------------------------------- helpers (Lightning's static methods)
    @staticmethod
    def flatten_modules(modules: Modules) -> list[nn.Module]:
        """The leaf modules (those without children, or with parameters of their own) of ``modules``."""
        if isinstance(modules, nn.ModuleDict):
            modules = modules.values()
        if isinstance(modules, nn.Module):
            found = modules.modules()
        elif isinstance(modules, Iterable):
            found = [m for item in modules for m in BaseFinetuning.flatten_modules(item)]
        else:
            raise MisconfigurationError(f"expected a torch.nn.Module or an iterable of them; received "
                                        f"{type(modules).__name__}.")
        return [m for m in found if not list(m.children()) or m._parameters]

    @staticmethod
    def filter_params(modules: Modules, train_bn: bool = True, requires_grad: bool = True) -> Iterator[nn.Parameter]:
        """The parameters of ``modules`` whose ``requires_grad`` equals ``requires_grad`` (BatchNorm's
        skipped when ``train_bn`` is False)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and not train_bn:
                continue
            for p in module.parameters(recurse=False):
                if p.requires_grad == requires_grad:
                    yield p

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        """Unfreeze the parameters of ``modules`` (BatchNorm tracks running statistics again)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for p in module.parameters(recurse=False):
                p.requires_grad = True

    @staticmethod
    def freeze_module(module: nn.Module) -> None:
        """Freeze the parameters of ``module`` itself (a BatchNorm stops tracking running statistics)."""
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for p in module.parameters(recurse=False):
            p.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        """Freeze ``modules``; with ``train_bn`` their BatchNorm layers stay trainable."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(module)
            else:
                BaseFinetuning.freeze_module(module)

    @staticmethod
    def filter_on_optimizer(optimizer: torch.optim.Optimizer, params: Iterable) -> list:
        """``params`` without those ``optimizer`` already has (a warning names the case)."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = list(params)
        out = [p for p in params if id(p) not in held]
        if len(out) != len(params):
            warnings.warn(
                "some parameters to unfreeze are already in the optimizer's param groups and are skipped; build "
                f"the optimizer on trainable parameters only: {type(optimizer).__name__}(filter(lambda p: "
                "p.requires_grad, self.parameters()), ...).", stacklevel=3)
        return out

    @staticmethod
    def unfreeze_and_add_param_group(modules: Modules, optimizer: torch.optim.Optimizer, lr: float | None = None,
                                     initial_denom_lr: float = 10.0, train_bn: bool = True) -> None:
        """Unfreeze ``modules`` and add their parameters to ``optimizer`` as a new param group, with
        learning rate ``lr`` (default: the first group's lr divided by ``initial_denom_lr``)."""
        BaseFinetuning.make_trainable(modules)
        base = optimizer.param_groups[0]["lr"] if lr is None else float(lr)
        denom = initial_denom_lr if lr is None else 1.0
        params = BaseFinetuning.filter_on_optimizer(
            optimizer, BaseFinetuning.filter_params(modules, train_bn=train_bn, requires_grad=True))
        if params:
            optimizer.add_param_group({"params": params, "lr": base / denom})


def multiplicative(epoch: int) -> float:
    """BackboneFinetuning's default ``lambda_func``: the backbone's lr doubles every epoch."""
    return 2.0


class BackboneFinetuning(BaseFinetuning):
    """Freeze ``pl_module.backbone`` until epoch ``unfreeze_backbone_at_epoch``, then train it with its
    own learning rate: ``backbone_initial_lr`` (default: the current lr times
    ``backbone_initial_ratio_lr``), multiplied by ``lambda_func(epoch + 1)`` every later epoch and,
    with ``should_align``, never above the rest of the model's lr.

    Args:
        unfreeze_backbone_at_epoch: the epoch (from 0) the backbone starts training.
        lambda_func: ``epoch -> factor`` the backbone's lr is multiplied by every epoch after that
            (default: 2.0, doubling).
        backbone_initial_ratio_lr: the backbone's first lr as a fraction of the first param group's lr
            (default 0.1), when ``backbone_initial_lr`` is None.
        backbone_initial_lr: the backbone's first lr, or None to use the ratio.
        should_align: cap the backbone's lr at the first param group's lr.
        initial_denom_lr: passed to ``unfreeze_and_add_param_group``; no effect here, the lr is always given.
        train_bn: also train the backbone's BatchNorm layers once unfrozen.
        verbose: log both learning rates at each change.
        rounding: the decimals of the logged learning rates.

    The module must have a ``backbone`` attribute that is an ``nn.Module`` (else ``MisconfigurationError``
    at setup).
    """

    def __init__(self, unfreeze_backbone_at_epoch: int = 10, lambda_func: Callable = multiplicative,
                 backbone_initial_ratio_lr: float = 10e-2, backbone_initial_lr: float | None = None,
                 should_align: bool = True, initial_denom_lr: float = 10.0, train_bn: bool = True,
                 verbose: bool = False, rounding: int = 12) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align, self.initial_denom_lr, self.train_bn = should_align, initial_denom_lr, train_bn
        self.verbose, self.rounding = verbose, rounding
        self.previous_backbone_lr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous_backbone_lr = state.get("previous_backbone_lr")
        super().load_state_dict(state)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and not isinstance(getattr(pl_module, "backbone", None), nn.Module):
            raise MisconfigurationError(f"BackboneFinetuning needs the module to have a `backbone` attribute that is "
                                        f"a torch.nn.Module; {type(pl_module).__name__} has none.")
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module) -> None:
        self.freeze(pl_module.backbone)

    def finetune_function(self, pl_module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        current_lr = optimizer.param_groups[0]["lr"]
        if epoch == self.unfreeze_backbone_at_epoch:
            lr = (self.backbone_initial_lr if self.backbone_initial_lr is not None
                  else current_lr * self.backbone_initial_ratio_lr)
            self.previous_backbone_lr = lr
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, lr, train_bn=self.train_bn,
                                              initial_denom_lr=self.initial_denom_lr)
        elif epoch > self.unfreeze_backbone_at_epoch:
            lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            if self.should_align and lr > current_lr:
                lr = current_lr
            optimizer.param_groups[-1]["lr"] = lr
            self.previous_backbone_lr = lr
        else:
            return
        if self.verbose:
            log.info("Current lr: %s, Backbone lr: %s", round(current_lr, self.rounding), round(lr, self.rounding))
