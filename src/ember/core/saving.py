"""Read a hyperparameter file for ``load_from_checkpoint(hparams_file=...)``: Lightning's ``hparams.yaml``
(what ember's CSVLogger and TensorBoardLogger write) or its older ``hparams.csv`` (``key,value`` rows)."""

from __future__ import annotations

import ast
import csv
import json
import os
from typing import Any

from ember.errors import MisconfigurationError


def read_hparams_file(path: str | os.PathLike) -> dict[str, Any]:
    """The hyperparameters in ``path`` (``.yaml``/``.yml`` or ``.csv``) as a dict."""
    name = os.fspath(path)
    ext = os.path.splitext(name)[1].lower()
    if ext not in (".yaml", ".yml", ".csv"):
        raise MisconfigurationError(
            f"hparams_file must be a .yaml, .yml or .csv file; received {name!r}. Pass the hparams.yaml "
            "a logger wrote (e.g. lightning_logs/version_0/hparams.yaml).")
    if not os.path.isfile(name):
        raise FileNotFoundError(f"hparams_file {name!r} does not exist; pass the path of an existing hparams.yaml.")
    with open(name, encoding="utf-8", newline="") as f:
        text = f.read()
    values = _read_csv(text) if ext == ".csv" else _read_yaml(text, name)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise MisconfigurationError(
            f"hparams_file {name!r} must hold a mapping of names to values; it holds a {type(values).__name__}.")
    return values


def _read_yaml(text: str, name: str) -> Any:
    try:
        import yaml
    except ImportError:
        try:  # ember's loggers write JSON (which is YAML) when PyYAML is missing
            return json.loads(text) if text.strip() else None
        except ValueError:
            raise MisconfigurationError(
                f"reading hparams_file {name!r} needs PyYAML: pip install pyyaml") from None
    try:
        return yaml.load(text, Loader=_data_loader(yaml))  # noqa: S506 - a SafeLoader: data only
    except yaml.constructor.ConstructorError as e:
        tag = (e.problem or "").rpartition("tag ")[2].strip("'").replace("tag:yaml.org,2002:", "!!")
        where = f" (line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1})" if e.problem_mark else ""
        raise MisconfigurationError(
            f"hparams_file {name!r} holds the YAML tag {tag}{where}, which would build a Python object; "
            "ember reads hparams files as plain YAML values only (and !!python/tuple). Edit the file to plain values "
            "(numbers, strings, lists, mappings), or pass the hyperparameters to load_from_checkpoint as keyword "
            "arguments instead.") from None
    except RecursionError:
        raise MisconfigurationError(
            f"hparams_file {name!r} is nested too deeply to read (lists or mappings inside each other hundreds of "
            "levels deep); write the hyperparameters as a flat mapping of plain values.") from None
    except yaml.YAMLError as e:
        raise MisconfigurationError(f"hparams_file {name!r} is not valid YAML: {e}") from None


def _data_loader(yaml: Any) -> type:
    """PyYAML's SafeLoader, plus ``!!python/tuple`` (what Lightning's ``save_hparams_to_yaml`` writes
    for a tuple), read as a tuple of plain values."""

    class DataLoader(yaml.SafeLoader):
        pass

    def tuple_(loader: Any, node: Any) -> tuple:
        return tuple(loader.construct_sequence(node))

    DataLoader.add_constructor("tag:yaml.org,2002:python/tuple", tuple_)
    return DataLoader


def _read_csv(text: str) -> dict[str, Any]:
    rows = [r for r in csv.reader(text.splitlines()) if r]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["key", "value"]:
        rows = rows[1:]  # Lightning's header row
    return {r[0]: _value(r[1] if len(r) > 1 else "") for r in rows}


def _value(text: str) -> Any:
    """A csv cell as the Python literal it spells (numbers, booleans, None, lists), else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
