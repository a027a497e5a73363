"""Tuning before training (Lightning's names): ``Tuner(trainer).lr_find(model)``, ``.scale_batch_size(model)``."""

from ember.tuner.tuning import Tuner

__all__ = ["Tuner"]
