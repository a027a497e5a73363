"""The tuner's searches as callbacks: ``LearningRateFinder`` and ``BatchSizeFinder`` search at the start of fit
(Lightning's ``lightning.pytorch.callbacks.lr_finder`` / ``batch_size_finder`` names re-export them)."""

from __future__ import annotations

from ember.core.callback import Callback
from ember.errors import MisconfigurationError
from ember.tuner.batch_size_scaling import scale_batch_size
from ember.tuner.lr_finder import lr_find
from ember.tuner.session import TunerExit


class LearningRateFinder(Callback):
    """At ``on_fit_start``, run the learning-rate search (``ember.tuner.lr_finder``), restore the run, set
    the model's lr to the suggestion (``update_attr``) and train on. The finder is ``optimal_lr``.
    Subclass it and call ``self.lr_find(trainer, pl_module)`` from another hook to search elsewhere.

    Args:
        min_lr: the learning rate of the first step (must be > 0 and < ``max_lr``).
        max_lr: the learning rate of the last step.
        num_training_steps: the number of training steps the search runs.
        mode: how the lr grows step by step: "exponential" (default) or "linear".
        early_stop_threshold: stop the search once the smoothed loss exceeds this many times the best loss so
            far; ``None`` never stops early.
        update_attr: set the model's learning-rate attribute to the suggestion after the search.
        attr_name: the attribute (or hparam) to set; "" looks for ``lr``, then ``learning_rate``.

    Raises ``MisconfigurationError`` for an unknown mode or when not ``0 < min_lr < max_lr``.
    """

    SUPPORTED_MODES = ("linear", "exponential")

    def __init__(self, min_lr: float = 1e-8, max_lr: float = 1, num_training_steps: int = 100,
                 mode: str = "exponential", early_stop_threshold: float | None = 4.0, update_attr: bool = True,
                 attr_name: str = "") -> None:
        if mode not in self.SUPPORTED_MODES:
            raise MisconfigurationError(f"LearningRateFinder mode must be one of {list(self.SUPPORTED_MODES)}; "
                                        f"received {mode!r}.")
        if not 0 < min_lr < max_lr:
            raise MisconfigurationError(f"LearningRateFinder needs 0 < min_lr < max_lr; received min_lr={min_lr}, "
                                        f"max_lr={max_lr}.")
        self._min_lr, self._max_lr, self._num_training_steps = min_lr, max_lr, num_training_steps
        self._mode, self._early_stop_threshold = mode, early_stop_threshold
        self._update_attr, self._attr_name = update_attr, attr_name
        self._early_exit = False
        self.optimal_lr = None

    def lr_find(self, trainer, pl_module) -> None:
        """Run the search now and store the finder in ``optimal_lr``.

        Args:
            trainer: the Trainer running; its state is restored after the search.
            pl_module: the LightningModule whose learning rate is searched.
        """
        self.optimal_lr = lr_find(trainer, pl_module, min_lr=self._min_lr, max_lr=self._max_lr,
                                  num_training=self._num_training_steps, mode=self._mode,
                                  early_stop_threshold=self._early_stop_threshold, update_attr=self._update_attr,
                                  attr_name=self._attr_name)
        if self._early_exit:

            raise TunerExit()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.lr_find(trainer, pl_module)


class BatchSizeFinder(Callback):
    """At ``on_fit_start``, find the largest batch size that fits (``ember.tuner.batch_size_scaling``),
    restore the run and train on with it. The size found is ``optimal_batch_size``.

    Args:
        mode: "power" doubles the size until it fails; "binsearch" then bisects between the last good and the
            failing size.
        steps_per_trial: training steps run at each size.
        init_val: the first size tried.
        max_trials: the most sizes tried.
        batch_arg_name: the attribute (or hparam) of the model or datamodule that holds the batch size.
        margin: in "binsearch", the fraction the size found is reduced by (in [0, 1); default 5 %).
        max_val: the largest size tried.

    Raises ``MisconfigurationError`` for an unknown mode or a margin outside [0, 1).
    """

    SUPPORTED_MODES = ("power", "binsearch")

    def __init__(self, mode: str = "power", steps_per_trial: int = 3, init_val: int = 2, max_trials: int = 25,
                 batch_arg_name: str = "batch_size", margin: float = 0.05, max_val: int = 8192) -> None:
        if mode not in self.SUPPORTED_MODES:
            raise MisconfigurationError(f"BatchSizeFinder mode must be one of {list(self.SUPPORTED_MODES)}; "
                                        f"received {mode!r}.")
        if not 0.0 <= margin < 1.0:
            raise MisconfigurationError(f"BatchSizeFinder margin must be in [0, 1); received {margin}.")
        self._mode, self._steps_per_trial, self._init_val = mode, steps_per_trial, init_val
        self._max_trials, self._batch_arg_name = max_trials, batch_arg_name
        self._margin, self._max_val = margin, max_val
        self._early_exit = False
        self.optimal_batch_size: int | None = init_val

    def scale_batch_size(self, trainer, pl_module) -> None:
        """Run the search now and store the size found in ``optimal_batch_size``.

        Args:
            trainer: the Trainer running; its state is restored after the search.
            pl_module: the LightningModule; ``batch_arg_name`` is looked up on it, its hparams, then the
                datamodule and its hparams.
        """
        self.optimal_batch_size = scale_batch_size(
            trainer, pl_module, mode=self._mode, steps_per_trial=self._steps_per_trial, init_val=self._init_val,
            max_trials=self._max_trials, batch_arg_name=self._batch_arg_name, margin=self._margin,
            max_val=self._max_val)
        if self._early_exit:

            raise TunerExit()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.scale_batch_size(trainer, pl_module)
