"""Callback: hooks the Trainer calls, and optional state saved in every checkpoint."""

from __future__ import annotations

from typing import Any


class Callback:
    """Override the hooks you need. State returned by ``state_dict()`` is saved under ``state_key``
    and given back to ``load_state_dict()`` on resume; state that no callback claims is reported."""

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint: a short, stable string (the class name by
        default). Override it when a Trainer has two callbacks of one class; the Trainer refuses two
        callbacks with one key."""
        return type(self).__qualname__

    def state_dict(self) -> dict[str, Any]:
        """This callback's state to save in checkpoints (under ``state_key``); empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state ``state_dict`` returned, on resume; does nothing by default.

        Args:
            state: the dict saved under ``state_key``.
        """
        pass

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Called when fit, validate, test or predict begins, before the loops run.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            stage: the Trainer method: "fit", "validate", "test" or "predict".
        """

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Called when fit, validate, test or predict ends.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            stage: the Trainer method: "fit", "validate", "test" or "predict".
        """

    def on_fit_start(self, trainer, pl_module) -> None:
        """Called when fit begins.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_fit_end(self, trainer, pl_module) -> None:
        """Called when fit ends.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        """Called before the validation sanity check runs.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        """Called after the validation sanity check.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_train_start(self, trainer, pl_module) -> None:
        """Called when training begins.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_train_end(self, trainer, pl_module) -> None:
        """Called when training ends.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        """Called at the start of each training epoch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Called at the end of each training epoch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        """Called before each training batch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
        """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Called after each training batch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            outputs: what the step returned (in training, the loss output).
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
        """

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        """Called before ``loss.backward()``.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            loss: the loss tensor about to be backpropagated.
        """

    def on_after_backward(self, trainer, pl_module) -> None:
        """Called after ``loss.backward()`` and before the optimizer step.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """Called before each ``optimizer.step()``.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            optimizer: the optimizer about to step.
        """

    def on_before_zero_grad(self, trainer, pl_module, optimizer) -> None:
        """Called before ``optimizer.zero_grad()``.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            optimizer: the optimizer whose gradients are about to be zeroed.
        """

    def on_validation_start(self, trainer, pl_module) -> None:
        """Called when a validation run begins.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_validation_end(self, trainer, pl_module) -> None:
        """Called when a validation run ends.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        """Called at the start of each validation epoch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        """Called at the end of each validation epoch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before each validation batch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        """Called after each validation batch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            outputs: what the step returned.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_test_start(self, trainer, pl_module) -> None:
        """Called when testing begins.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_test_end(self, trainer, pl_module) -> None:
        """Called when testing ends.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        """Called at the start of the test epoch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        """Called at the end of the test epoch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before each test batch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called after each test batch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            outputs: what the step returned.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_predict_start(self, trainer, pl_module) -> None:
        """Called when prediction begins.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_predict_end(self, trainer, pl_module) -> None:
        """Called when prediction ends.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        """Called at the start of the prediction epoch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        """Called at the end of the prediction epoch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
        """

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before each prediction batch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        """Called after each prediction batch.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            outputs: what the step returned.
            batch: the batch the loader gave, moved to the module's device.
            batch_idx: the batch's index in the epoch.
            dataloader_idx: the index of the loader the batch came from (0 with one loader).
        """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Called when a checkpoint is saved, before it is written; edit ``checkpoint`` in place.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            checkpoint: the checkpoint dict about to be written.
        """

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Called when a run resumes from a checkpoint, after the run's state is restored from it.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            checkpoint: the checkpoint dict.
        """

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Called when the run raises, before the exception propagates.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule the Trainer runs.
            exception: the exception raised.
        """
