"""``lightning.pytorch.utilities.compile``: the module behind ``torch.compile``."""

from __future__ import annotations

from typing import Any

from ember.not_supported import placeholder


def to_uncompiled(model: Any) -> Any:
    """The module ``torch.compile`` wrapped (its ``_orig_mod``), or ``model`` itself when it is not compiled.

    Args:
        model: a module, compiled or not.
    """
    import torch._dynamo

    return model._orig_mod if isinstance(model, torch._dynamo.OptimizedModule) else model


from_compiled = placeholder("utilities.compile.from_compiled")

__all__ = ["from_compiled", "to_uncompiled"]
