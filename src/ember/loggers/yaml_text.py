"""``hparams.yaml`` text: YAML through PyYAML when it is installed, else JSON (which YAML reads)."""

from __future__ import annotations

import enum
import json
import os
from argparse import Namespace
from typing import Any


def plain(value: Any) -> Any:
    """``value`` as YAML-safe data: containers as lists and dicts, paths and enums as strings, other
    objects by their ``repr`` (a hyperparameter file is for reading, never for building objects)."""
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def dump_yaml(values: dict) -> str:
    data = plain(values)
    try:
        import yaml  # deferred: optional dependency (yaml)
    except ImportError:
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False)
