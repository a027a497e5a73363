"""A module's ``__init__`` arguments: captured at construction (``save_hyperparameters``, pickling), and rebuilt
from a checkpoint's hyperparameters (``load_from_checkpoint``)."""

from __future__ import annotations

import copy
import inspect
from argparse import Namespace
from typing import Any, Mapping

from ember.errors import MisconfigurationError


class AttributeDict(dict):
    """A dict whose keys are also attributes: ``hparams.lr`` and ``hparams["lr"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(f"hparams has no entry {name!r}; it has {sorted(self)}") from e

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def store_hparams(obj: Any, values: dict[str, Any], names: tuple = (), ignore: str | list[str] | None = None) -> None:
    """``save_hyperparameters``' last step for a module, datamodule or mixin: keep ``names`` of ``values``
    (all when none are given; an unknown name raises), leave out ``ignore``, and store the result as the
    object's ``hparams`` and ``hparams_initial``."""
    unknown = [a for a in names if a not in values]
    if unknown:
        raise MisconfigurationError(f"save_hyperparameters got names that are not __init__ arguments: {unknown}; "
                                    f"the arguments are {list(values)}.")
    ignored = {ignore} if isinstance(ignore, str) else set(ignore or ())
    chosen = {k: values[k] for k in names} if names else values
    hp = AttributeDict((k, v) for k, v in chosen.items() if k not in ignored)
    obj.__dict__["_hparams"] = hp
    obj.__dict__["_hparams_initial"] = copy.deepcopy(hp)


def init_arguments(module: Any) -> dict[str, Any]:
    """The named __init__ arguments of every class level; a subclass's values win over its parents'."""
    out: dict[str, Any] = {}
    for call in reversed(module.__dict__.get("_ember_init_calls", [])):
        out.update(_bind(call))
    return out


def _bind(call) -> dict[str, Any]:
    """The named arguments of a recorded __init__ call, defaults applied, **kwargs flattened."""
    init, args, kwargs = call
    sig = inspect.signature(init)
    try:
        bound = sig.bind(None, *args, **kwargs)
    except TypeError as e:  # the call ran, so only a signature that misdescribes __init__ gets here
        raise MisconfigurationError(
            f"cannot tell which values {init.__qualname__} received ({e}): its signature {sig} does not match "
            "the call. Save the hyperparameters explicitly: self.save_hyperparameters({'name': value, ...})."
        ) from None
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for i, (name, value) in enumerate(bound.arguments.items()):
        if i == 0:
            continue  # self
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            continue  # *args have no names to save them under
        else:
            out[name] = value
    return out


def _init_params(cls) -> tuple[dict[str, inspect.Parameter], bool]:
    init = cls.__init__
    sig = inspect.signature(init)
    params = dict(list(sig.parameters.items())[1:])
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    params = {k: p for k, p in params.items()
              if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    return params, var_kw


def _init_kwargs_from_checkpoint(cls, ckpt: dict, overrides: dict, path) -> dict:
    hp = ckpt.get("hyper_parameters") or {}
    params, var_kw = _init_params(cls)
    hp_name = ckpt.get("hparams_name")
    if ckpt.get("hparams_type") == "Namespace" or (hp_name and hp_name in params):
        # The seed's pattern: __init__(self, hparams) took one Namespace (or dict) holding everything.
        container = Namespace(**hp) if ckpt.get("hparams_type") == "Namespace" else AttributeDict(hp)
        name = hp_name if hp_name in params else ("hparams" if "hparams" in params else None)
        if name is None:
            return _direct(hp, overrides, params, var_kw, cls, path)
        init_kwargs = {}
        for k, v in overrides.items():
            if k in params:
                init_kwargs[k] = v
            else:
                setattr(container, k, v) if isinstance(container, Namespace) else container.__setitem__(k, v)
        init_kwargs.setdefault(name, container)
        return init_kwargs
    return _direct(hp, overrides, params, var_kw, cls, path)


def _direct(hp: Mapping, overrides: dict, params: dict, var_kw: bool, cls, path) -> dict:
    init_kwargs = {k: v for k, v in hp.items() if k in params or var_kw}
    unknown = [k for k in overrides if k not in params and not var_kw]
    if unknown:
        raise MisconfigurationError(
            f"{cls.__name__}.load_from_checkpoint got {unknown}, which {cls.__name__}.__init__ does not take; "
            f"it takes {list(params)}."
        )
    init_kwargs.update(overrides)
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in init_kwargs]
    if missing:
        raise MisconfigurationError(
            f"cannot build {cls.__name__} from {path}: the checkpoint has no saved value for the __init__ "
            f"argument(s) {missing}. Pass them, e.g. {cls.__name__}.load_from_checkpoint(path, "
            + ", ".join(f"{m}=..." for m in missing)
            + "), or call self.save_hyperparameters() in __init__ so future checkpoints hold them."
        )
    return init_kwargs
