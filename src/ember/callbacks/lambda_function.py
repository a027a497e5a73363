"""LambdaCallback: a callback made of plain functions, one per hook (Lightning's names)."""

from __future__ import annotations

import inspect
from typing import Callable

from ember.core.callback import Callback
from ember.errors import MisconfigurationError

#: the hooks LambdaCallback accepts, as keyword arguments of its constructor
HOOKS = (
    "setup", "teardown", "on_fit_start", "on_fit_end", "on_sanity_check_start", "on_sanity_check_end",
    "on_train_batch_start", "on_train_batch_end", "on_train_epoch_start", "on_train_epoch_end",
    "on_validation_epoch_start", "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
    "on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end",
    "on_train_start", "on_train_end", "on_validation_start", "on_validation_end", "on_test_start", "on_test_end",
    "on_exception", "on_save_checkpoint", "on_load_checkpoint", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad", "on_predict_start", "on_predict_end",
    "on_predict_batch_start", "on_predict_batch_end", "on_predict_epoch_start", "on_predict_epoch_end",
)


class LambdaCallback(Callback):
    """Each keyword argument is a function that runs as that hook, with the hook's arguments
    (``trainer, pl_module, ...``); hooks not given do nothing.

    Example: ``LambdaCallback(on_train_epoch_end=lambda trainer, module: print(trainer.current_epoch))``.

    Args:
        **hooks: hook name (one of ``HOOKS``, e.g. ``on_fit_start``) to the function run as it, or None for
            none; an unknown name or a value that is not callable raises ``MisconfigurationError``.
    """

    def __init__(self, **hooks: Callable | None) -> None:
        unknown = sorted(set(hooks) - set(HOOKS))
        if unknown:
            raise MisconfigurationError(f"LambdaCallback got unknown hooks {unknown}; the hooks it accepts are "
                                        f"{list(HOOKS)}.")
        for name, fn in hooks.items():
            if fn is None:
                continue
            if not callable(fn):
                raise MisconfigurationError(f"LambdaCallback({name}=...) must be a function; received "
                                            f"{type(fn).__name__}.")
            setattr(self, name, fn)  # an instance attribute: the Trainer sees the hook as overridden


def _signature():
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(h, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                 annotation="Callable | None") for h in HOOKS]
    return inspect.Signature(params, return_annotation=None)


LambdaCallback.__init__.__signature__ = _signature()  # what help() and inspect show: one argument per hook
