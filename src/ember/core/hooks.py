"""The hooks a LightningModule may override, with Lightning's names, arguments and defaults.

The loops call a module hook only when the module's class overrides it (``ember.loops.hooks``), so the
empty defaults here cost nothing per batch."""

from __future__ import annotations

from typing import Any

import torch

from ember.errors import MisconfigurationError


class ModelHooks:
    """No-op hooks (override what you need), the overridable steps of automatic optimization, and
    the small conveniences Lightning modules use (``self.print``, ``self.logger``, ``freeze``)."""

    # ---------------------------------------------------------------- conveniences
    @property
    def logger(self):
        """The Trainer's logger (None outside a Trainer or without one)."""
        return getattr(self.trainer, "logger", None) if self.trainer is not None else None

    @property
    def loggers(self) -> list:
        return list(getattr(self.trainer, "loggers", [])) if self.trainer is not None else []

    @property
    def global_rank(self) -> int:
        from ember import distributed

        return distributed.global_rank()

    @property
    def local_rank(self) -> int:
        from ember import distributed

        return distributed.local_rank()

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the global-zero process only."""
        from ember import distributed

        if distributed.is_global_zero():
            print(*args, **kwargs)

    def freeze(self) -> None:
        """No parameter requires grad, and eval mode (for inference)."""
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = True
        self.train()

    # ---------------------------------------------------------------- setup and data
    def prepare_data(self) -> None:
        """Download or write data once (before setup); do not assign state here."""

    def setup(self, stage: str) -> None:
        """Build what depends on the stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``."""

    def teardown(self, stage: str) -> None: ...

    device_mesh = None  # under strategy="fsdp": the job's DeviceMesh, set before configure_model() runs

    def configure_model(self) -> None:
        """Build (or shard) layers late; under FSDP, ``self.device_mesh`` is set and sharding here replaces
        ember's default ``fully_shard`` units."""

    def configure_callbacks(self):
        """Callbacks the module brings; they replace the Trainer's callbacks of the same class."""
        return []

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Tensors in dicts, lists, tuples and named tuples go to ``device``; override for other types."""
        return move_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    # ---------------------------------------------------------------- fit
    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None: ...
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_before_backward(self, loss: torch.Tensor) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer) -> None: ...
    def on_before_zero_grad(self, optimizer) -> None: ...

    # ---------------------------------------------------------------- evaluation
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """Lightning's default: the model applied to the batch."""
        return self(batch)

    def on_validation_model_zero_grad(self) -> None:
        """Before fit's validations (outside an accumulation window): release the gradients."""
        self.zero_grad()

    def on_validation_model_eval(self) -> None:
        self.eval()

    def on_validation_model_train(self) -> None:
        self.train()

    def on_test_model_eval(self) -> None:
        self.eval()

    def on_test_model_train(self) -> None:
        self.train()

    def on_predict_model_eval(self) -> None:
        self.eval()

    # ---------------------------------------------------------------- the steps of automatic optimization
    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backpropagate ``loss`` (scaled for float16 by the Trainer's precision)."""
        precision = self.trainer.precision_plugin if self.trainer is not None else None
        if precision is not None:
            precision.backward(loss, *args, **kwargs)
        else:
            loss.backward(*args, **kwargs)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Step ``optimizer`` (a wrapper whose ``step`` goes through the precision plugin)."""
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def clip_gradients(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the gradients of ``optimizer``'s parameters (already unscaled) by norm or value."""
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
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """A batch (tensors in dicts, lists, tuples, named tuples) on ``device``."""
    if device.type == "cpu":
        return batch  # data loaders yield CPU tensors; nothing to move
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return type(batch)((k, move_to_device(v, device)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch
