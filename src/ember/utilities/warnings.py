"""``lightning.pytorch.utilities.warnings``: the warning class for hints that may not apply to every program."""

from __future__ import annotations

import warnings


class PossibleUserWarning(UserWarning):
    """A hint about a setting that is often a mistake (too few loader workers, a small log interval); silence
    all of them with :func:`disable_possible_user_warnings`."""


def disable_possible_user_warnings(module: str = "") -> None:
    """Ignore every :class:`PossibleUserWarning` from now on.

    Args:
        module: only those raised from modules whose name matches this regular expression ("" for all).
    """
    warnings.filterwarnings("ignore", category=PossibleUserWarning, module=module)


__all__ = ["PossibleUserWarning", "disable_possible_user_warnings"]
