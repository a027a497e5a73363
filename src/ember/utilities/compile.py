"""``trainer.fit(torch.compile(model))``: the LightningModule inside ``torch.compile``'s wrapper.

``torch.compile`` returns an ``OptimizedModule`` that wraps the module without being one. As Lightning
documents, the Trainer takes the module out and compiles its ``forward`` and step methods with the
wrapper's compiler context (same backend and options), so training runs compiled and the weights,
hooks and checkpoint keys are the module's own (no ``_orig_mod.`` prefix)."""

from __future__ import annotations

import sys
from typing import Any

STEP_METHODS = ("forward", "training_step", "validation_step", "test_step", "predict_step")


def is_compiled(model: Any) -> bool:
    """Whether ``model`` is what ``torch.compile(module)`` returned. torch.compile imports dynamo: while it
    is not imported nothing is compiled, and it is not imported here (a second or more on a first fit)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return eval_frame is not None and isinstance(model, eval_frame.OptimizedModule)


def from_compiled(model: Any) -> Any:
    """The module inside ``torch.compile(module)``, with its forward and step methods compiled (the
    originals are kept in ``module._compiler_ctx`` for ``to_uncompiled``)."""
    if not is_compiled(model):
        raise ValueError(f"from_compiled expects what torch.compile(module) returns; received {type(model).__name__}.")
    module, ctx = model._orig_mod, model.dynamo_ctx
    originals = {name: getattr(module, name) for name in STEP_METHODS if callable(getattr(module, name, None))}
    module._compiler_ctx = {"compiler": "dynamo", "dynamo_ctx": ctx,
                            **{f"original_{name}": fn for name, fn in originals.items()}}
    for name, fn in originals.items():
        setattr(module, name, ctx(fn))
    return module


def to_uncompiled(model: Any) -> Any:
    """The module with its original (uncompiled) methods back; a compiled wrapper's module as it was."""
    if is_compiled(model):
        return model._orig_mod
    ctx = getattr(model, "_compiler_ctx", None)
    if not ctx:
        return model
    for name in STEP_METHODS:
        if f"original_{name}" in ctx:
            setattr(model, name, ctx[f"original_{name}"])
    model._compiler_ctx = None
    return model


def unwrap_compiled(model: Any) -> Any:
    """What the Trainer runs: ``from_compiled(model)`` for a compiled module, else ``model`` itself."""
    return from_compiled(model) if is_compiled(model) else model
