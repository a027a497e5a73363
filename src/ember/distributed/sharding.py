"""Optimizer states between the two layouts a checkpoint may hold them in: numbered (``Optimizer.state_dict()``,
from one process or DDP) and named by parameter (``get_optimizer_state_dict``, from FSDP)."""

from __future__ import annotations

from typing import Any, Mapping



def is_named(state: Any) -> bool:
    """Whether an optimizer state lists its parameters by name (FSDP) rather than by number."""
    groups = state.get("param_groups") if isinstance(state, Mapping) else None
    params = groups[0].get("params") if isinstance(groups, list) and groups and isinstance(groups[0], Mapping) else None
    return bool(params) and isinstance(params[0], str)


def optimizer_states_for(ckpt: dict, module, optimizers: list, sharded: bool) -> dict:
    """``ckpt`` with its optimizer states in the layout this run loads: named when ``sharded`` (FSDP),
    numbered otherwise. States already in that layout, and malformed ones (``check_resumable``
    reports them), are left as they are."""
    from ember.distributed.fsdp import optimizer_state_from_plain, optimizer_state_to_plain  # deferred: FSDP, DCP

    states = ckpt.get("optimizer_states")
    if not isinstance(states, list) or len(states) != len(optimizers):
        return ckpt
    if not any(is_named(s) != sharded for s in states if isinstance(s, Mapping)):
        return ckpt
    out = []
    for state, opt in zip(states, optimizers):
        if not isinstance(state, Mapping) or is_named(state) == sharded:
            out.append(state)
        else:
            out.append(optimizer_state_from_plain(state, module, opt) if sharded else optimizer_state_to_plain(state))
    return {**ckpt, "optimizer_states": out}
