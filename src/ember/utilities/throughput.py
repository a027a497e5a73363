"""``measure_flops``: the floating-point operations of one forward (and backward) pass."""

from __future__ import annotations

from typing import Callable

import torch


def measure_flops(model: torch.nn.Module, forward_fn: Callable[[], torch.Tensor],
                  loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> int:
    """Count the FLOPs of ``forward_fn()`` (plus the backward of ``loss_fn(output)`` when given), with
    ``torch.utils.flop_counter``. Build the model on the ``meta`` device to count without computing.

    Args:
        model: the module whose operations are counted.
        forward_fn: runs the forward pass and returns its output.
        loss_fn: turns the output into a loss to differentiate; None counts the forward only.
    """
    from torch.utils.flop_counter import FlopCounterMode  # deferred: loaded only when FLOPs are measured

    counter = FlopCounterMode(display=False)
    with counter:
        if loss_fn is None:
            with torch.no_grad():
                forward_fn()
        else:
            loss_fn(forward_fn()).backward()
    return int(counter.get_total_flops())


__all__ = ["measure_flops"]
