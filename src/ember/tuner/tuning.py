"""Tuner: ``Tuner(trainer).lr_find(model, ...)`` and ``Tuner(trainer).scale_batch_size(model, ...)``."""

from __future__ import annotations

from typing import Any

from ember.tuner.callbacks import BatchSizeFinder, LearningRateFinder
from ember.errors import MisconfigurationError


class Tuner:
    """Searches before training, as Lightning's Tuner: each method runs ``trainer.fit`` with a finder
    callback that searches at ``on_fit_start`` and then ends the fit; the model, the optimizers and the
    Trainer are restored from a checkpoint written before the search (ember's own format, deleted after).

    Args:
        trainer: the Trainer to search with; it must not already have the finder callback being run.
    """

    def __init__(self, trainer) -> None:
        self._trainer = trainer

    def _run(self, callback, model, train_dataloaders, val_dataloaders, dataloaders, datamodule, method: str):
        if method != "fit":
            raise MisconfigurationError(f"ember's tuner searches while fitting only; received method={method!r}. Use "
                                        "method='fit'.")
        if dataloaders is not None:
            raise MisconfigurationError("dataloaders= is for method='validate'|'test'|'predict'; with method='fit' "
                                        "pass train_dataloaders= (and val_dataloaders=).")
        trainer = self._trainer
        if any(type(cb) is type(callback) for cb in trainer.callbacks):
            raise MisconfigurationError(f"the Trainer already has a {type(callback).__name__} callback; call the "
                                        "Tuner without it, or fit with the callback alone.")
        callback._early_exit = True
        trainer.callbacks = [*trainer.callbacks, callback]
        try:
            trainer.fit(model, train_dataloaders, val_dataloaders, datamodule)
        finally:
            trainer.callbacks = [cb for cb in trainer.callbacks if cb is not callback]
        return callback

    def lr_find(self, model, train_dataloaders: Any = None, val_dataloaders: Any = None, dataloaders: Any = None,
                datamodule: Any = None, method: str = "fit", min_lr: float = 1e-8, max_lr: float = 1,
                num_training: int = 100, mode: str = "exponential", early_stop_threshold: float | None = 4.0,
                update_attr: bool = True, attr_name: str = ""):
        """Train ``num_training`` steps with the lr growing from ``min_lr`` to ``max_lr`` (``mode``
        "exponential" or "linear"), stopping when the smoothed loss exceeds ``early_stop_threshold`` times
        its best. Returns the finder: ``results`` ({"lr", "loss"}), ``suggestion()``, ``plot()``. With
        ``update_attr`` the model's ``lr``/``learning_rate`` (or ``attr_name``) is set to the suggestion.

        Args:
            model: the LightningModule to tune.
            train_dataloaders: the training loader(s) (or a datamodule), as for ``Trainer.fit``.
            val_dataloaders: the validation loader(s), as for ``Trainer.fit``.
            dataloaders: for Lightning's other methods only; not None raises ``MisconfigurationError``.
            datamodule: the LightningDataModule giving the loaders.
            method: the Trainer method to tune with; only "fit" is supported (else ``MisconfigurationError``).
            min_lr: the learning rate of the first step (must be > 0 and < ``max_lr``).
            max_lr: the learning rate of the last step.
            num_training: the number of training steps the search runs.
            mode: how the lr grows step by step: "exponential" (default) or "linear".
            early_stop_threshold: stop the search once the smoothed loss exceeds this many times the best loss so
                far; ``None`` never stops early.
            update_attr: set the model's learning-rate attribute to the suggestion after the search.
            attr_name: the attribute (or hparam) to set; "" looks for ``lr``, then ``learning_rate``.
        """

        cb = LearningRateFinder(min_lr=min_lr, max_lr=max_lr, num_training_steps=num_training, mode=mode,
                                early_stop_threshold=early_stop_threshold, update_attr=update_attr,
                                attr_name=attr_name)
        return self._run(cb, model, train_dataloaders, val_dataloaders, dataloaders, datamodule, method).optimal_lr

    def scale_batch_size(self, model, train_dataloaders: Any = None, val_dataloaders: Any = None,
                         dataloaders: Any = None, datamodule: Any = None, method: str = "fit", mode: str = "power",
                         steps_per_trial: int = 3, init_val: int = 2, max_trials: int = 25,
                         batch_arg_name: str = "batch_size", margin: float = 0.05, max_val: int = 8192) -> int | None:
        """Find the largest batch size that fits in memory: from ``init_val``, double it (``"power"``), or
        double then bisect (``"binsearch"``, reduced by ``margin`` at the end), ``steps_per_trial`` steps
        per size, at most ``max_trials`` sizes and ``max_val``. The model's (or datamodule's)
        ``batch_arg_name`` is left at the size found, which is returned. The training loader must come
        from ``train_dataloader()``.

        Args:
            model: the LightningModule to tune.
            train_dataloaders: the training loader(s) (or a datamodule), as for ``Trainer.fit``.
            val_dataloaders: the validation loader(s), as for ``Trainer.fit``.
            dataloaders: for Lightning's other methods only; not None raises ``MisconfigurationError``.
            datamodule: the LightningDataModule giving the loaders.
            method: the Trainer method to tune with; only "fit" is supported (else ``MisconfigurationError``).
            mode: "power" doubles the size until it fails; "binsearch" then bisects between the last good and the
                failing size.
            steps_per_trial: training steps run at each size.
            init_val: the first size tried.
            max_trials: the most sizes tried.
            batch_arg_name: the attribute (or hparam) of the model or datamodule that holds the batch size.
            margin: in "binsearch", the fraction the size found is reduced by (in [0, 1); default 5 %).
            max_val: the largest size tried.
        """

        cb = BatchSizeFinder(mode=mode, steps_per_trial=steps_per_trial, init_val=init_val, max_trials=max_trials,
                             batch_arg_name=batch_arg_name, margin=margin, max_val=max_val)
        return self._run(cb, model, train_dataloaders, val_dataloaders, dataloaders, datamodule,
                         method).optimal_batch_size
