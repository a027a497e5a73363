"""StochasticWeightAveraging: average the weights of the last epochs, with SWA's learning-rate schedule
(Lightning's callback, after Izmailov et al., 2018).

From epoch ``swa_epoch_start`` the first optimizer's scheduler is replaced by ``torch.optim.swa_utils.SWALR``
(annealing to ``swa_lrs``), and at the start of each later epoch the running average of the weights
is updated. When training ends, the model gets the averaged weights. The average, its count and the
SWALR state are saved in every checkpoint, so a resumed run averages the same epochs."""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.swa_utils import SWALR

from ember.callbacks._bn_pass import training_pass
from ember.core.callback import Callback
from ember.errors import MisconfigurationError
from ember.loops.optim import SchedulerConfig

AvgFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class StochasticWeightAveraging(Callback):
    """``swa_lrs``: the SWA learning rate (one for every param group, or a list with one per group);
    ``swa_epoch_start``: the epoch averaging starts (an int, 1-based as Lightning counts it, or a
    fraction of ``max_epochs``); ``annealing_epochs`` and ``annealing_strategy`` ("cos" or "linear"):
    how SWALR moves to ``swa_lrs``; ``avg_fn(averaged, current, n_averaged)``: the average (a running
    mean by default); ``device``: where the averaged copy lives (None: the model's device).

    A model with BatchNorm layers gets its running statistics recomputed for the averaged weights when
    training ends: one pass of ``training_step`` over the training data without gradients (Lightning
    runs the same pass as an extra epoch, counted in ``current_epoch``).

    Args:
        swa_lrs: the SWA learning rate: a positive float for every param group, or a list, one per group.
        swa_epoch_start: the first averaged epoch: an int >= 1 (1-based), or a float in (0, 1], a fraction of
            ``max_epochs``.
        annealing_epochs: the epochs (an int >= 0) SWALR takes to reach ``swa_lrs``.
        annealing_strategy: "cos" (default) or "linear" annealing.
        avg_fn: ``(averaged, current, n_averaged) -> tensor``, the averaging rule (None: the running mean).
        device: where the averaged copy lives (default the CPU; None: the model's device).

    Bad values raise ``MisconfigurationError``.
    """

    def __init__(self, swa_lrs: float | list[float], swa_epoch_start: int | float = 0.8, annealing_epochs: int = 10,
                 annealing_strategy: str = "cos", avg_fn: AvgFn | None = None,
                 device: torch.device | str | None = torch.device("cpu")) -> None:
        if isinstance(swa_epoch_start, int) and not isinstance(swa_epoch_start, bool):
            if swa_epoch_start < 1:
                raise MisconfigurationError(f"swa_epoch_start must be an int >= 1 or a float in (0, 1]; received "
                                            f"{swa_epoch_start}.")
        elif not isinstance(swa_epoch_start, float) or not 0 < swa_epoch_start <= 1:
            raise MisconfigurationError(f"swa_epoch_start must be an int >= 1 or a float in (0, 1]; received "
                                        f"{swa_epoch_start!r}.")
        lrs = swa_lrs if isinstance(swa_lrs, (list, tuple)) else [swa_lrs]
        if not lrs or not all(isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 for lr in lrs):
            raise MisconfigurationError(f"swa_lrs must be a positive float or a list of positive floats; received "
                                        f"{swa_lrs!r}.")
        if annealing_strategy not in ("cos", "linear"):
            raise MisconfigurationError(f"annealing_strategy must be 'cos' or 'linear'; received "
                                        f"{annealing_strategy!r}.")
        if not isinstance(annealing_epochs, int) or annealing_epochs < 0:
            raise MisconfigurationError(f"annealing_epochs must be an int >= 0; received {annealing_epochs!r}.")
        self._swa_epoch_start = swa_epoch_start
        self._swa_lrs = list(swa_lrs) if isinstance(swa_lrs, (list, tuple)) else float(swa_lrs)
        self._annealing_epochs, self._annealing_strategy = annealing_epochs, annealing_strategy
        self._avg_fn = avg_fn or self.avg_fn
        self._device = device
        self._max_epochs: int | None = None
        self._average_model: nn.Module | None = None
        self._initialized = False
        self._swa_scheduler = None
        self._scheduler_state: dict | None = None
        self._init_n_averaged = 0
        self._latest_update_epoch = -1
        self.n_averaged: torch.Tensor | None = None
        self.momenta: dict[nn.Module, Any] = {}

    @property
    def swa_start(self) -> int:
        """The first averaged epoch, 0-based."""
        return max(self._start_epoch() - 1, 0)

    @property
    def swa_end(self) -> int | float:
        """The last averaged epoch, 0-based (inf without max_epochs)."""
        return float("inf") if self._max_epochs in (None, -1) else self._max_epochs - 1

    def _start_epoch(self) -> int:
        start = self._swa_epoch_start
        if isinstance(start, float):
            if self._max_epochs in (None, -1):
                raise MisconfigurationError("StochasticWeightAveraging(swa_epoch_start=<a fraction>) needs "
                                            "Trainer(max_epochs=N); give swa_epoch_start as an int instead.")
            return int(self._max_epochs * start)
        return start

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: nn.Module) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pl_module.modules())

    @staticmethod
    def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        """The running mean: ``averaged + (current - averaged) / (num_averaged + 1)``."""
        return averaged + (current - averaged) / (num_averaged + 1)

    # ---------------------------------------------------------------- hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        if hasattr(getattr(trainer, "strategy", None), "state_for_save"):
            raise MisconfigurationError("StochasticWeightAveraging does not support sharded models (FSDP); use "
                                        "strategy='ddp' or one process.")
        self._average_model = copy_module(pl_module)

    def on_fit_start(self, trainer, pl_module) -> None:
        if len(trainer.optimizers) != 1:
            raise MisconfigurationError(f"StochasticWeightAveraging works with one optimizer; configure_optimizers() "
                                        f"returned {len(trainer.optimizers)}.")
        if len(trainer.lr_scheduler_configs) > 1:
            raise MisconfigurationError(f"StochasticWeightAveraging works with at most one LR scheduler; "
                                        f"configure_optimizers() returned {len(trainer.lr_scheduler_configs)}.")
        self._max_epochs = trainer.max_epochs
        self._start_epoch()  # a fraction without max_epochs is refused here

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if not self._initialized and self.swa_start <= epoch <= self.swa_end:
            self._initialized = True
            self._start_swa(trainer, pl_module, epoch)
        if self.swa_start <= epoch <= self.swa_end and epoch > self._latest_update_epoch:
            self.update_parameters(self._average_model, pl_module, self.n_averaged, self._avg_fn)
            self._latest_update_epoch = epoch

    def _start_swa(self, trainer, pl_module, epoch: int) -> None:
        self._average_model = self._average_model.to(self._device or pl_module.device)
        optimizer = trainer.optimizers[0]
        lrs = self._swa_lrs if isinstance(self._swa_lrs, list) else [self._swa_lrs] * len(optimizer.param_groups)
        if len(lrs) != len(optimizer.param_groups):
            raise MisconfigurationError(f"swa_lrs has {len(lrs)} values but the optimizer has "
                                        f"{len(optimizer.param_groups)} param groups; "
                                        "give one per group, or one float.")
        for lr, group in zip(lrs, optimizer.param_groups):
            group["initial_lr"] = lr
        self._swa_scheduler = SWALR(optimizer, swa_lr=lrs, anneal_epochs=self._annealing_epochs,
                                    anneal_strategy=self._annealing_strategy,
                                    last_epoch=trainer.max_epochs if self._annealing_strategy == "cos" else -1)
        if self._scheduler_state is not None:
            self._swa_scheduler.load_state_dict(self._scheduler_state)
        elif epoch != self.swa_start:
            warnings.warn("StochasticWeightAveraging starts after swa_epoch_start without saved SWA state (a resume "
                          "from a checkpoint written without this callback?); averaging starts now.", stacklevel=2)
        schedulers = trainer.fit_loop.parts.schedulers  # the loop steps these: SWALR takes the first's place
        swa = SchedulerConfig(self._swa_scheduler, interval="epoch", frequency=1)
        if schedulers:
            if schedulers[0].interval != "epoch" or schedulers[0].frequency != 1:
                warnings.warn(f"StochasticWeightAveraging replaces a scheduler stepping every {schedulers[0].frequency}"
                              f" {schedulers[0].interval}(s) by SWALR, which steps every epoch.", stacklevel=2)
            schedulers[0] = swa
        else:
            schedulers.append(swa)
        if self.n_averaged is None:
            self.n_averaged = torch.tensor(self._init_n_averaged, dtype=torch.long, device=pl_module.device)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._average_model is None or self.n_averaged is None or int(self.n_averaged) == 0:
            return  # averaging never started (stopped before swa_epoch_start)
        if self._max_epochs not in (None, -1) and trainer.current_epoch - 1 != self.swa_end:
            return  # stopped before max_epochs (early stopping, max_steps, a signal): as Lightning, no transfer
        self.transfer_weights(self._average_model, pl_module)
        if self.pl_module_contains_batch_norm(pl_module):
            self._update_batch_norm(trainer, pl_module)

    # ---------------------------------------------------------------- weights
    @staticmethod
    def transfer_weights(src_pl_module: nn.Module, dst_pl_module: nn.Module) -> None:
        """Copy ``src``'s parameters into ``dst``'s."""
        with torch.no_grad():
            for src, dst in zip(src_pl_module.parameters(), dst_pl_module.parameters()):
                dst.detach().copy_(src.to(dst.device))

    @staticmethod
    def update_parameters(average_model: nn.Module, model: nn.Module, n_averaged: torch.Tensor,
                          avg_fn: AvgFn) -> None:
        """Fold ``model``'s parameters into ``average_model``'s running average; ``n_averaged`` += 1."""
        with torch.no_grad():
            for p_avg, p in zip(average_model.parameters(), model.parameters()):
                current = p.detach().to(p_avg.device)
                p_avg.detach().copy_(current if int(n_averaged) == 0 else
                                     avg_fn(p_avg.detach(), current, n_averaged.to(p_avg.device)))
        n_averaged += 1

    def reset_batch_norm_and_save_state(self, pl_module: nn.Module) -> None:
        """Zero every BatchNorm's running statistics and make it average over all batches (momentum None).

        Args:
            pl_module: the module whose BatchNorm layers are reset; their momenta are kept in ``self.momenta``.
        """
        self.momenta = {}
        for m in pl_module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean = torch.zeros_like(m.running_mean)
                m.running_var = torch.ones_like(m.running_var)
                self.momenta[m] = m.momentum
                m.momentum = None
                m.num_batches_tracked *= 0

    def reset_momenta(self) -> None:
        """Put back the BatchNorm momenta that ``reset_batch_norm_and_save_state`` saved."""
        for m, momentum in self.momenta.items():
            m.momentum = momentum

    def _update_batch_norm(self, trainer, pl_module) -> None:
        self.reset_batch_norm_and_save_state(pl_module)
        try:
            training_pass(trainer, pl_module)
        finally:
            self.reset_momenta()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"n_averaged": 0 if self.n_averaged is None else int(self.n_averaged),
                "latest_update_epoch": self._latest_update_epoch,
                "scheduler_state": None if self._swa_scheduler is None else self._swa_scheduler.state_dict(),
                "average_model_state": None if self._average_model is None else self._average_model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._init_n_averaged = int(state["n_averaged"])
        self._latest_update_epoch = int(state["latest_update_epoch"])
        self._scheduler_state = state["scheduler_state"]
        if self._average_model is not None and state.get("average_model_state") is not None:
            self._average_model.load_state_dict(state["average_model_state"])


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without its Trainer and logging links (they hold threads and locks)."""
    links = [module.__dict__.get(k) for k in ("_trainer", "_logged")]
    return copy.deepcopy(module, memo={id(obj): None for obj in links if obj is not None})
