"""``lightning.pytorch.utilities.parameter_tying``: find parameters shared between layers and tie them again."""

from __future__ import annotations

from torch import nn


def find_shared_parameters(module: nn.Module) -> list[list[str]]:
    """Groups of parameter names that refer to one tensor (tied weights), each group of two or more.

    Args:
        module: the model.
    """
    groups: dict[int, list[str]] = {}
    for mod_name, mod in module.named_modules(remove_duplicate=False):
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            groups.setdefault(id(p), [])
            if full not in groups[id(p)]:
                groups[id(p)].append(full)
    return [names for names in groups.values() if len(names) > 1]


def set_shared_parameters(module: nn.Module, shared_params: list[list[str]]) -> nn.Module:
    """Tie the parameters in each group to the group's first (after moving a model, ties can break).

    Args:
        module: the model.
        shared_params: groups of names, as :func:`find_shared_parameters` returns them.
    """
    for names in shared_params:
        first = module.get_parameter(names[0])
        for name in names[1:]:
            owner, _, leaf = name.rpartition(".")
            setattr(module.get_submodule(owner) if owner else module, leaf, first)
    return module


__all__ = ["find_shared_parameters", "set_shared_parameters"]
