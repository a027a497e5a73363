"""``grad_norm``: the norm of every parameter's gradient and of all of them together (to log them)."""

from __future__ import annotations

import torch
from torch import nn


def grad_norm(module: nn.Module, norm_type: float | int | str, group_separator: str = "/") -> dict[str, torch.Tensor]:
    """``{"grad_<p>_norm<sep><name>": norm, ..., "grad_<p>_norm_total": norm}`` over the parameters
    that have a gradient; ``norm_type`` is a positive number or ``"inf"``. Log it from
    ``on_before_optimizer_step`` with ``self.log_dict(grad_norm(self, norm_type=2))``."""
    p = float(norm_type)
    if p <= 0:
        raise ValueError(f"norm_type must be a positive number or 'inf'; received {norm_type!r}")
    key = f"grad_{p}_norm"
    norms = {f"{key}{group_separator}{name}": torch.linalg.vector_norm(w.grad.detach(), ord=p)
             for name, w in module.named_parameters() if w.grad is not None}
    if norms:
        norms[f"{key}_total"] = torch.linalg.vector_norm(torch.stack(list(norms.values())), ord=p)
    return norms
