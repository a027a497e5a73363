"""LearningRateFinder: the learning-rate finder as a callback (searches at the start of fit)."""

from __future__ import annotations

from ember.callbacks.base import Callback
from ember.errors import MisconfigurationError


class LearningRateFinder(Callback):
    """At ``on_fit_start``, run the learning-rate search (``ember.tuner.lr_finder``), restore the run, set
    the model's lr to the suggestion (``update_attr``) and train on. The finder is ``optimal_lr``.
    Subclass it and call ``self.lr_find(trainer, pl_module)`` from another hook to search elsewhere."""

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
        from ember.tuner.lr_finder import lr_find

        self.optimal_lr = lr_find(trainer, pl_module, min_lr=self._min_lr, max_lr=self._max_lr,
                                  num_training=self._num_training_steps, mode=self._mode,
                                  early_stop_threshold=self._early_stop_threshold, update_attr=self._update_attr,
                                  attr_name=self._attr_name)
        if self._early_exit:
            from ember.tuner.session import TunerExit

            raise TunerExit()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.lr_find(trainer, pl_module)
