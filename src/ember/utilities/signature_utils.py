"""``lightning.pytorch.utilities.signature_utils``: whether a hook takes a given argument."""

from __future__ import annotations

import inspect
from typing import Callable


def is_param_in_hook_signature(hook_fx: Callable, param: str, explicit: bool = False,
                               min_args: int | None = None) -> bool:
    """Whether ``hook_fx`` accepts the argument ``param``.

    Args:
        hook_fx: the hook (a bound method or a function).
        param: the argument's name, e.g. ``"batch_idx"``.
        explicit: only a parameter of that name counts, not ``*args``.
        min_args: with ``*args`` and ``explicit=False``: it counts when the hook has at least this many
            named parameters.
    """
    parameters = inspect.signature(hook_fx).parameters
    if param in parameters:
        return True
    if explicit:
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters.values()):
        named = [p for p in parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return min_args is None or len(named) >= min_args
    return False


__all__ = ["is_param_in_hook_signature"]
