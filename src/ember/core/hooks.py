"""The hooks a LightningModule may override, with Lightning's names, arguments and defaults.

The loops call a module hook only when the module's class overrides it (``ember.loops.hooks``), so the
empty defaults here cost nothing per batch."""

from __future__ import annotations

from typing import Any

import torch

from ember import distributed
from ember.core.data_hooks import CheckpointHooks, DataHooks, move_to_device  # noqa: F401 (Lightning's path)
from ember.core.surface import HparamsSurface, ModuleSurface  # noqa: F401 (the datamodule's base)
from ember.distributed.env import Ranks
from ember.errors import MisconfigurationError


class ModelHooks(DataHooks, CheckpointHooks, ModuleSurface, Ranks):
    """No-op hooks (override what you need), the overridable steps of automatic optimization, and
    the small conveniences Lightning modules use (``self.print``, ``self.logger``, ``freeze``)."""

    # ---------------------------------------------------------------- conveniences
    @property
    def logger(self):
        """The Trainer's logger (None outside a Trainer or without one)."""
        return getattr(self.trainer, "logger", None) if self.trainer is not None else None

    @property
    def loggers(self) -> list:
        """The Trainer's loggers (empty outside a Trainer)."""
        return list(getattr(self.trainer, "loggers", [])) if self.trainer is not None else []

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the global-zero process only.

        Args:
            *args: passed to ``print``.
            **kwargs: passed to ``print``.
        """
        if distributed.is_global_zero():
            print(*args, **kwargs)

    def freeze(self) -> None:
        """No parameter requires grad, and eval mode (for inference)."""
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        """Every parameter requires grad again, and train mode."""
        for p in self.parameters():
            p.requires_grad = True
        self.train()

    # ---------------------------------------------------------------- setup and data
    def prepare_data(self) -> None:
        """Download or write data once (before setup); do not assign state here."""

    device_mesh = None  # under strategy="fsdp": the job's DeviceMesh, set before configure_model() runs

    def configure_model(self) -> None:
        """Build (or shard) layers late; under FSDP, ``self.device_mesh`` is set and sharding here replaces
        ember's default ``fully_shard`` units."""

    def configure_callbacks(self):
        """Callbacks the module brings; they replace the Trainer's callbacks of the same class."""
        return []

    # ---------------------------------------------------------------- fit
    def on_fit_start(self) -> None:
        """Called when fit begins."""

    def on_fit_end(self) -> None:
        """Called when fit ends."""

    def on_train_start(self) -> None:
        """Called when training begins."""

    def on_train_end(self) -> None:
        """Called when training ends."""

    def on_train_epoch_start(self) -> None:
        """Called at the start of each training epoch."""

    def on_train_epoch_end(self) -> None:
        """Called at the end of each training epoch."""

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        """Called before each training batch; returning -1 ends the epoch early.

        Args:
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
        """

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Called after each training batch.

        Args:
            outputs: what the step returned.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
        """

    def on_before_backward(self, loss: torch.Tensor) -> None:
        """Called before ``loss.backward()``.

        Args:
            loss: the loss tensor about to be backpropagated.
        """

    def on_after_backward(self) -> None:
        """Called after ``loss.backward()`` and before the optimizer step."""

    def on_before_optimizer_step(self, optimizer) -> None:
        """Called before each ``optimizer.step()``.

        Args:
            optimizer: the optimizer about to step.
        """

    def on_before_zero_grad(self, optimizer) -> None:
        """Called before ``optimizer.zero_grad()``.

        Args:
            optimizer: the optimizer whose gradients are about to be zeroed.
        """

    # ---------------------------------------------------------------- evaluation
    def on_validation_start(self) -> None:
        """Called when a validation run begins."""

    def on_validation_end(self) -> None:
        """Called when a validation run ends."""

    def on_validation_epoch_start(self) -> None:
        """Called at the start of each validation epoch."""

    def on_validation_epoch_end(self) -> None:
        """Called at the end of each validation epoch."""

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before each validation batch.

        Args:
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called after each validation batch.

        Args:
            outputs: what the step returned.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_test_start(self) -> None:
        """Called when testing begins."""

    def on_test_end(self) -> None:
        """Called when testing ends."""

    def on_test_epoch_start(self) -> None:
        """Called at the start of the test epoch."""

    def on_test_epoch_end(self) -> None:
        """Called at the end of the test epoch."""

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before each test batch.

        Args:
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called after each test batch.

        Args:
            outputs: what the step returned.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_predict_start(self) -> None:
        """Called when prediction begins."""

    def on_predict_end(self) -> None:
        """Called when prediction ends."""

    def on_predict_epoch_start(self) -> None:
        """Called at the start of the prediction epoch."""

    def on_predict_epoch_end(self) -> None:
        """Called at the end of the prediction epoch."""

    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before each prediction batch.

        Args:
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called after each prediction batch.

        Args:
            outputs: what the step returned.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """Lightning's default: the model applied to the batch.

        Args:
            batch: the batch, on the module's device.
            batch_idx: the batch's index.
            dataloader_idx: the index of its loader.
        """
        return self(batch)

    def on_validation_model_zero_grad(self) -> None:
        """Before fit's validations (outside an accumulation window): release the gradients."""
        self.zero_grad()

    def on_validation_model_eval(self) -> None:
        """Before validation: ``self.eval()``."""
        self.eval()

    def on_validation_model_train(self) -> None:
        """After validation during fit: ``self.train()``."""
        self.train()

    def on_test_model_eval(self) -> None:
        """Before testing: ``self.eval()``."""
        self.eval()

    def on_test_model_train(self) -> None:
        """After testing: ``self.train()``."""
        self.train()

    def on_predict_model_eval(self) -> None:
        """Before prediction: ``self.eval()``."""
        self.eval()

    # ---------------------------------------------------------------- the steps of automatic optimization
    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backpropagate ``loss`` (scaled for float16 by the Trainer's precision).

        Args:
            loss: the tensor to backpropagate from.
            *args: passed on to ``loss.backward``.
            **kwargs: passed on to ``loss.backward``.
        """
        precision = self.trainer.precision_plugin if self.trainer is not None else None
        if precision is not None:
            precision.backward(loss, *args, **kwargs)
        else:
            loss.backward(*args, **kwargs)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Step ``optimizer`` (a wrapper whose ``step`` goes through the precision plugin).

        Args:
            epoch: the current epoch.
            batch_idx: the batch's index in the epoch.
            optimizer: the optimizer to step.
            optimizer_closure: the closure that runs the training step and backward, given to ``step``.
        """
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        """Zero ``optimizer``'s gradients (``set_to_none=True``).

        Args:
            epoch: the current epoch.
            batch_idx: the batch's index in the epoch.
            optimizer: the optimizer whose gradients are zeroed.
        """
        optimizer.zero_grad(set_to_none=True)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip gradients before each step; the default calls ``clip_gradients`` with the Trainer's settings.

        Args:
            optimizer: the optimizer about to step.
            gradient_clip_val: the Trainer's ``gradient_clip_val`` (None or 0: no clipping).
            gradient_clip_algorithm: the Trainer's ``gradient_clip_algorithm``.
        """
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def clip_gradients(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the gradients of ``optimizer``'s parameters (already unscaled) by norm or value.

        Args:
            optimizer: the optimizer whose parameters' gradients are clipped.
            gradient_clip_val: the largest norm or value (None or 0: no clipping).
            gradient_clip_algorithm: "norm" (default when None) or "value"; another raises
                ``MisconfigurationError``.
        """
        if not gradient_clip_val:
            return
        params = [q for g in optimizer.param_groups for q in g["params"] if q.grad is not None]
        algorithm = gradient_clip_algorithm or "norm"
        if algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        elif algorithm == "norm":
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
        else:
            raise MisconfigurationError(f"gradient_clip_algorithm must be 'norm' or 'value'; received {algorithm!r}.")

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """Step ``scheduler``: ``scheduler.step(metric)``, or ``scheduler.step()`` when ``metric`` is None.

        Args:
            scheduler: the LR scheduler to step.
            metric: the monitored value for ``ReduceLROnPlateau``-like schedulers, else None.
        """
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)
