"""Exporting a model for inference: TorchScript (``torch.jit.script`` / ``trace``) and ONNX.

``Module.to_torchscript`` and ``Module.to_onnx`` call these. The model is exported in eval mode
and its training mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import tempfile
from typing import Any, Iterator

import torch
from torch import nn

from ember.errors import MisconfigurationError


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(training)


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _example(model: nn.Module, given: Any, what: str) -> Any:
    example = given if given is not None else getattr(model, "example_input_array", None)
    if example is None:
        raise MisconfigurationError(
            f"{what} needs an example input: pass it, or set model.example_input_array = torch.randn(...) "
            "in __init__.")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return _to_device(example, device)


def to_torchscript(model: nn.Module, file_path: str | os.PathLike | None = None, method: str = "script",
                   example_inputs: Any = None, **kwargs: Any):
    """``torch.jit.script(model)`` (``method="script"``) or ``torch.jit.trace(model, example_inputs)``
    (``"trace"``; default input ``model.example_input_array``); saved to ``file_path`` when given."""
    if method not in ("script", "trace"):
        raise ValueError(f"method must be 'script' or 'trace'; received {method!r}")
    with _eval_mode(model), torch.no_grad():
        if method == "script":
            scripted = torch.jit.script(model, **kwargs)
        else:
            example = _example(model, example_inputs, "to_torchscript(method='trace')")
            scripted = torch.jit.trace(model, example_inputs=example, **kwargs)
    if file_path is not None:
        _save_whole(scripted, os.fspath(file_path))
    return scripted


def _save_whole(scripted: Any, path: str) -> None:
    """``torch.jit.save`` to a temporary name beside ``path``, then a rename: a reader (another process of the
    job writing the same file, as every DDP rank does) never sees it half-written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path) or ".")
    os.close(fd)
    try:
        torch.jit.save(scripted, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _onnx_packages(kwargs: dict) -> list[str]:
    """``onnx``, and ``onnxscript`` when torch exports through dynamo (its default from torch 2.9)."""
    param = inspect.signature(torch.onnx.export).parameters.get("dynamo")
    dynamo = kwargs.get("dynamo", param.default if param is not None else False)
    return ["onnx", "onnxscript"] if dynamo else ["onnx"]


def to_onnx(model: nn.Module, file_path: str | os.PathLike, input_sample: Any = None, **kwargs: Any) -> None:
    """``torch.onnx.export`` of the model to ``file_path`` (default input ``model.example_input_array``).
    Needs the ``onnx`` package (and ``onnxscript`` for torch's dynamo exporter)."""
    missing = [p for p in _onnx_packages(kwargs) if importlib.util.find_spec(p) is None]
    if missing:
        raise ModuleNotFoundError(f"to_onnx needs the {' and '.join(missing)} package(s), which are not installed; "
                                  f"`pip install {' '.join(missing)}`.")
    example = _example(model, input_sample, "to_onnx")
    args = example if isinstance(example, tuple) else (example,)
    with _eval_mode(model), torch.no_grad():
        torch.onnx.export(model, args, os.fspath(file_path), **kwargs)
