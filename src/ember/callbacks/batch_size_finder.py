"""BatchSizeFinder: the batch-size finder as a callback (searches at the start of fit)."""

from __future__ import annotations

from ember.callbacks.base import Callback
from ember.errors import MisconfigurationError


class BatchSizeFinder(Callback):
    """At ``on_fit_start``, find the largest batch size that fits (``ember.tuner.batch_size_scaling``),
    restore the run and train on with it. The size found is ``optimal_batch_size``."""

    SUPPORTED_MODES = ("power", "binsearch")

    def __init__(self, mode: str = "power", steps_per_trial: int = 3, init_val: int = 2, max_trials: int = 25,
                 batch_arg_name: str = "batch_size", margin: float = 0.05, max_val: int = 8192) -> None:
        if mode not in self.SUPPORTED_MODES:
            raise MisconfigurationError(f"BatchSizeFinder mode must be one of {list(self.SUPPORTED_MODES)}; "
                                        f"received {mode!r}.")
        if not 0.0 <= margin < 1.0:
            raise MisconfigurationError(f"BatchSizeFinder margin must be in [0, 1); received {margin}.")
        self._mode, self._steps_per_trial, self._init_val = mode, steps_per_trial, init_val
        self._max_trials, self._batch_arg_name, self._margin, self._max_val = max_trials, batch_arg_name, margin, max_val
        self._early_exit = False
        self.optimal_batch_size: int | None = init_val

    def scale_batch_size(self, trainer, pl_module) -> None:
        from ember.tuner.batch_size_scaling import scale_batch_size

        self.optimal_batch_size = scale_batch_size(
            trainer, pl_module, mode=self._mode, steps_per_trial=self._steps_per_trial, init_val=self._init_val,
            max_trials=self._max_trials, batch_arg_name=self._batch_arg_name, margin=self._margin,
            max_val=self._max_val)
        if self._early_exit:
            from ember.tuner.session import TunerExit

            raise TunerExit()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.scale_batch_size(trainer, pl_module)
