"""``lightning.pytorch.core.mixins``: ``HyperparametersMixin``."""

from ember.core.mixins.hparams_mixin import HyperparametersMixin

__all__ = ["HyperparametersMixin"]
