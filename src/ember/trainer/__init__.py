"""The Trainer: its arguments, the facts it exposes, and the fit/validate/test/predict entry points."""

from ember.trainer.trainer import Trainer

__all__ = ["Trainer"]
