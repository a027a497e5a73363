"""Optimizers as the module sees them (``self.optimizers()``), and what manual optimization needs.

``StepCounted`` wraps a torch optimizer: ``step()`` waits for an in-flight checkpoint copy, runs the
``on_before_optimizer_step`` hooks, steps through the precision plugin (GradScaler) and counts
``global_step`` as Lightning does (every optimizer step counts, so two optimizers stepping each batch
advance it by two). Everything else is the wrapped optimizer's."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ember.errors import MisconfigurationError


class StepCounted:
    """A torch optimizer whose ``step`` is the Trainer's (Lightning's ``LightningOptimizer``)."""

    def __init__(self, optimizer: torch.optim.Optimizer,
                 step: Callable[[torch.optim.Optimizer, Any], Any] | None = None) -> None:
        """Args:
            optimizer: the torch optimizer to wrap.
            step: how ``step(closure)`` runs (the Trainer's counted step); None: the optimizer's own ``step``.
        """
        self.__dict__["_optimizer"] = optimizer
        self.__dict__["_step"] = step if step is not None else (lambda opt, closure: opt.step(closure))

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        return self._step(self._optimizer, closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_optimizer"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._optimizer, name, value)

    def __repr__(self) -> str:
        return f"StepCounted({self._optimizer!r})"


LightningOptimizer = StepCounted  # Lightning's name (lightning.pytorch.core.optimizer)


def do_nothing_closure() -> None:
    """A closure for ``optimizer.step(closure)`` that computes nothing."""


class Toggled:
    """``toggle_optimizer``: only ``optimizer``'s parameters require grad until ``untoggle``."""

    def __init__(self) -> None:
        self._saved: dict[int, tuple[torch.nn.Parameter, bool]] = {}

    def toggle(self, optimizer, optimizers: list) -> None:
        optimizer = getattr(optimizer, "optimizer", optimizer)
        mine = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for opt in optimizers:
            for g in getattr(opt, "optimizer", opt).param_groups:
                for p in g["params"]:
                    if id(p) not in mine:
                        self._saved.setdefault(id(p), (p, p.requires_grad))
                        p.requires_grad_(False)
        for g in optimizer.param_groups:
            for p in g["params"]:
                if id(p) in self._saved:
                    p.requires_grad_(self._saved.pop(id(p))[1])

    def untoggle(self) -> None:
        for p, flag in self._saved.values():
            p.requires_grad_(flag)
        self._saved = {}


def check_manual_settings(settings) -> None:
    """Trainer settings that only make sense when the Trainer steps the optimizers."""
    if settings.accumulate_grad_batches != 1:
        raise MisconfigurationError(
            f"accumulate_grad_batches={settings.accumulate_grad_batches} does not apply with "
            "automatic_optimization=False: accumulate by hand (step every n batches) and leave it at 1.")
    if settings.gradient_clip_val:
        raise MisconfigurationError(
            "gradient_clip_val does not apply with automatic_optimization=False: call "
            "self.clip_gradients(optimizer, gradient_clip_val=..., gradient_clip_algorithm=...) before "
            "optimizer.step() instead.")


class ManualSteps:
    """The optimizer steps ``self.optimizers()`` take (mixed into the fit loop)."""

    def _auto_step(self, optimizer: torch.optim.Optimizer, closure) -> Any:
        """``step()`` of ``self.optimizers()`` with automatic optimization: only inside optimizer_step."""
        if not self._in_step:
            raise MisconfigurationError(
                "optimizer.step() was called from training_step, but the Trainer steps the optimizers itself "
                "(automatic optimization), so this would step twice. Either return the loss and let the Trainer "
                "step, or set self.automatic_optimization = False in __init__ and call self.manual_backward(loss).")
        out = closure() if closure is not None else None
        self.parts.precision.step(optimizer)
        return out

    def manual_step(self, optimizer: torch.optim.Optimizer, closure) -> Any:
        """``step()`` of ``self.optimizers()`` with manual optimization: one counted optimizer step."""
        plugin = self.parts.precision
        out = None
        if closure is not None:
            with torch.enable_grad():
                out = closure()
        self.barrier()  # the step changes parameters an in-flight save may still be copying
        plugin.unscale(optimizer)
        self.call("on_before_optimizer_step", optimizer)
        plugin.step(optimizer)
        plugin.update()
        self.progress.global_step += 1
        self.optimizer_stepped = True
        return out

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        if not self.manual:
            raise MisconfigurationError("self.manual_backward(loss) is for automatic_optimization = False; with "
                                        "automatic optimization return the loss from training_step.")
        self.last_loss = loss.detach()
        self.barrier()  # backward changes gradients, which a checkpoint holds
        if self.parts.pre_backward is not None:
            self.parts.pre_backward(loss)
        self.backward(loss, *args, **kwargs)


class ManualOptimization:
    """``LightningModule``'s optimization surface (a mixin of ``ember.Module``): ``automatic_optimization``,
    ``optimizers()``, ``lr_schedulers()``, ``manual_backward``, ``toggle_optimizer``/``untoggle_optimizer``."""
    @property
    def automatic_optimization(self) -> bool:
        """False: training_step steps the optimizers itself (``self.optimizers()``, ``manual_backward``)."""
        return self.__dict__.get("_automatic_optimization", True)

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self.__dict__["_automatic_optimization"] = bool(value)

    def _fit_loop(self, what: str):
        loop = getattr(self.trainer, "fit_loop", None)
        if loop is None:
            raise MisconfigurationError(f"self.{what} is only available inside trainer.fit().")
        return loop

    def optimizers(self, use_pl_optimizer: bool = True):
        """The optimizers of configure_optimizers() (one, or a list), wrapped so that ``step()``
        goes through the Trainer (precision, global_step, checkpoint safety).

        Args:
            use_pl_optimizer: True (default) gives the wrapped optimizers; False the raw ``torch.optim`` ones.

        Raises ``MisconfigurationError`` outside ``trainer.fit()``.
        """
        loop = self._fit_loop("optimizers()")
        opts = loop.optimizer_views if use_pl_optimizer else loop.parts.optimizers
        return opts[0] if len(opts) == 1 else list(opts)

    def lr_schedulers(self):
        """The LR schedulers of configure_optimizers() (None, one, or a list); step them yourself in
        manual optimization."""
        scheds = [c.scheduler for c in self._fit_loop("lr_schedulers()").parts.schedulers]
        return None if not scheds else scheds[0] if len(scheds) == 1 else scheds

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """``loss.backward()`` through the Trainer: precision scaling and the backward hooks.

        Args:
            loss: the tensor to backpropagate from.
            *args: passed on to ``loss.backward``.
            **kwargs: passed on to ``loss.backward``.
        """
        self._fit_loop("manual_backward()").manual_backward(loss, *args, **kwargs)

    def toggle_optimizer(self, optimizer) -> None:
        """Only ``optimizer``'s parameters require grad until ``untoggle_optimizer``.

        Args:
            optimizer: one of ``self.optimizers()`` (wrapped or raw).
        """
        loop = self._fit_loop("toggle_optimizer()")
        loop.toggled.toggle(optimizer, loop.parts.optimizers)

    def untoggle_optimizer(self, optimizer=None) -> None:
        """Give back ``requires_grad`` to the parameters ``toggle_optimizer`` turned off.

        Args:
            optimizer: accepted for Lightning's API; the last toggle is undone whichever is given.
        """
        self._fit_loop("untoggle_optimizer()").toggled.untoggle()
