"""Read a hyperparameter file for ``load_from_checkpoint(hparams_file=...)``: Lightning's ``hparams.yaml``
(what ember's CSVLogger and TensorBoardLogger write) or its older ``hparams.csv`` (``key,value`` rows)."""

from __future__ import annotations

import ast
import csv
import json
import os
import warnings
from argparse import Namespace
from typing import Any

from ember.errors import MisconfigurationError
from ember.loggers.yaml_text import dump_yaml


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
        import yaml  # deferred: optional dependency (yaml)
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


def load_hparams_from_yaml(config_yaml: str | os.PathLike, use_omegaconf: bool = True) -> dict[str, Any]:
    """The hyperparameters in a ``hparams.yaml`` file; ``{}`` (with a warning) when the file does not exist.

    Args:
        config_yaml: the file's path.
        use_omegaconf: accepted for Lightning's signature; ember reads plain YAML (no interpolation).
    """
    name = os.fspath(config_yaml)
    if not os.path.isfile(name):
        warnings.warn(f"no hyperparameter file at {name!r}; using no hyperparameters.", stacklevel=2)
        return {}
    return read_hparams_file(name)


def save_hparams_to_yaml(config_yaml: str | os.PathLike, hparams: Any, use_omegaconf: bool = True) -> None:
    """Write hyperparameters (a dict or an ``argparse.Namespace``) to a YAML file, as ember's loggers do:
    values YAML cannot hold are written as their ``repr``.

    Args:
        config_yaml: the file to write; its folder must exist.
        hparams: the hyperparameters.
        use_omegaconf: accepted for Lightning's signature; OmegaConf containers are written as plain data.
    """
    name = os.fspath(config_yaml)
    folder = os.path.dirname(name) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {name!r}: the folder {folder!r} does not exist; create it first.")
    values = vars(hparams) if isinstance(hparams, Namespace) else hparams
    if not isinstance(values, dict):
        raise TypeError(f"hparams must be a dict or an argparse.Namespace; received {type(hparams).__name__}.")
    with open(name, "w", encoding="utf-8") as f:
        f.write(dump_yaml(dict(values)))


def load_hparams_from_tags_csv(tags_csv: str | os.PathLike) -> dict[str, Any]:
    """The hyperparameters in an old-style ``tags.csv`` (``key,value`` rows); ``{}`` when the file does not exist.

    Args:
        tags_csv: the file's path.
    """
    name = os.fspath(tags_csv)
    if not os.path.isfile(name):
        return {}
    with open(name, encoding="utf-8", newline="") as f:
        return _read_csv(f.read())


def save_hparams_to_tags_csv(tags_csv: str | os.PathLike, hparams: Any) -> None:
    """Write hyperparameters as ``key,value`` rows under a ``key,value`` header.

    Args:
        tags_csv: the file to write; its folder must exist.
        hparams: a dict or an ``argparse.Namespace``.
    """
    values = vars(hparams) if isinstance(hparams, Namespace) else dict(hparams)
    with open(os.fspath(tags_csv), "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "value"])
        for key, value in values.items():
            writer.writerow([key, value])


def convert(val: str) -> Any:
    """A text value as the Python literal it spells (numbers, booleans, None, lists), else the text itself.

    Args:
        val: the text.
    """
    if isinstance(val, str) and val.strip().lower() in ("none", "null"):
        return None
    return _value(val)


def update_hparams(hparams: dict, updates: dict) -> None:
    """Merge ``updates`` into ``hparams`` in place; nested dicts are merged key by key.

    Args:
        hparams: the dict to change.
        updates: the new values.
    """
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(hparams.get(key), dict):
            update_hparams(hparams[key], value)
        else:
            hparams[key] = value
