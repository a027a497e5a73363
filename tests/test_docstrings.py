"""Every public class and function of ember's public packages has a docstring, and an ``Args:`` section where it
takes arguments; so has every public method of those classes (a method that overrides a documented hook inherits
its base's docstring, as ``help()`` shows it)."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = ["ember", "ember.callbacks", "ember.loggers", "ember.checkpoint.io", "ember.checkpoint.resume",
            "ember.distributed", "ember.cli", "ember.profilers", "ember.tuner"]


def _public(package: str):
    mod = importlib.import_module(package)
    names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
    for name in names:
        obj = getattr(mod, name, None)
        if hasattr(obj, "__not_supported__"):
            continue  # a stand-in for what ember does not do: its docstring is the refusal (ember.not_supported)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", "").startswith("ember"):
            yield f"{package}.{name}", obj


def _takes_arguments(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name not in ("self", "cls") for p in params)


def _documented(obj, fn=None) -> str | None:
    """What is missing from ``obj``'s documentation (None: nothing)."""
    doc = inspect.getdoc(obj) or ""
    if not doc.strip():
        return "no docstring"
    fn = fn or (obj.__init__ if inspect.isclass(obj) else obj)
    if inspect.isclass(obj) and fn is object.__init__:
        return None
    if inspect.isclass(obj) and issubclass(obj, BaseException) and not _takes_arguments(fn):
        return None
    if _takes_arguments(fn) and "Args:" not in doc + (inspect.getdoc(fn) or "" if inspect.isclass(obj) else ""):
        return "no Args section"
    return None


def _entries():
    seen = set()
    for package in PACKAGES:
        for path, obj in _public(package):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            yield path, obj, None
            if inspect.isclass(obj):
                for name, member in vars(obj).items():
                    if not name.startswith("_") and inspect.isfunction(member):
                        yield f"{path}.{name}", getattr(obj, name), member


ENTRIES = list(_entries())


@pytest.mark.parametrize("path,obj,member", ENTRIES, ids=[e[0] for e in ENTRIES])
def test_public_name_is_documented_with_its_arguments(path, obj, member):
    problem = _documented(obj) if member is None else _documented(obj, member)
    assert problem is None, f"{path}: {problem}"
