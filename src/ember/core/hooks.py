"""The hooks a LightningModule may override, with Lightning's names, arguments and defaults.

The loops call a module hook only when the module's class overrides it (``ember.loops.hooks``), so the
empty defaults here cost nothing per batch."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch

from ember.errors import MisconfigurationError


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
        from ember.not_supported import refuse

        refuse("LightningModule.to_tensorrt")

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Every process's ``data`` stacked along a new first dimension (tensors in dicts, lists and tuples);
        in one process, ``data`` unchanged.

        Args:
            data: a tensor or a structure of tensors (the same shapes on every process).
            group: the process group (all processes when None).
            sync_grads: let gradients flow back through the gather.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return data
        if isinstance(data, dict):
            return type(data)((k, self.all_gather(v, group, sync_grads)) for k, v in data.items())
        if isinstance(data, (list, tuple)):
            return type(data)(self.all_gather(v, group, sync_grads) for v in data)
        tensor = torch.as_tensor(data, device=self.device)
        if sync_grads:
            from torch.distributed.nn.functional import all_gather

            return torch.stack(all_gather(tensor, group=group or dist.group.WORLD))
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.stack(parts)


class DataHooks:
    """The data hooks a LightningModule (and a datamodule) may override: download in ``prepare_data``
    (one process per machine), build datasets in ``setup(stage)``, move batches with the transfer hooks."""

    def prepare_data(self) -> None:
        """Download or write data once per machine, before ``setup``; do not set state here."""

    def setup(self, stage: str) -> None:
        """Build what each process needs for ``stage`` (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``).

        Args:
            stage: the Trainer method that is starting.
        """

    def teardown(self, stage: str) -> None:
        """Release what ``setup`` built, when ``stage`` ends.

        Args:
            stage: the Trainer method that is ending.
        """

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change a batch before it moves to the device; return it.

        Args:
            batch: the batch from the loader.
            dataloader_idx: which loader it came from.
        """
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move a batch to ``device`` (tensors in dicts, lists and tuples by default); return it.

        Args:
            batch: the batch.
            device: the device of this process.
            dataloader_idx: which loader it came from.
        """
        return move_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change a batch once it is on the device (augment on the GPU); return it.

        Args:
            batch: the batch on the device.
            dataloader_idx: which loader it came from.
        """
        return batch


class CheckpointHooks:
    """Hooks that add to or read from the checkpoint dict."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add entries to ``checkpoint`` before it is written (tensors, numbers, strings, lists, dicts).

        Args:
            checkpoint: the dict being saved.
        """

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read what :meth:`on_save_checkpoint` added, before the state is restored.

        Args:
            checkpoint: the dict that was loaded.
        """


class ModelHooks(DataHooks, CheckpointHooks, ModuleSurface):
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

    @property
    def global_rank(self) -> int:
        from ember import distributed

        return distributed.global_rank()

    @property
    def local_rank(self) -> int:
        from ember import distributed

        return distributed.local_rank()

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the global-zero process only.

        Args:
            *args: passed to ``print``.
            **kwargs: passed to ``print``.
        """
        from ember import distributed

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

    def setup(self, stage: str) -> None:
        """Build what depends on the stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

        Args:
            stage: the Trainer method that is starting.
        """

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
        """Tensors in dicts, lists, tuples and named tuples go to ``device``; override for other types.

        Args:
            batch: the batch.
            device: the device of this process.
            dataloader_idx: which loader it came from.
        """
        return move_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

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


def move_to_device(batch: Any, device: torch.device) -> Any:
    """A batch (tensors in dicts, lists, tuples, named tuples) on ``device``.

    Args:
        batch: the batch; other types are returned as they are.
        device: the target device (a CPU device returns ``batch`` unchanged).
    """
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
