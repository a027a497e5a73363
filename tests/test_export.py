"""Module.to_torchscript and Module.to_onnx (Lightning's export methods)."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

from ember.core.export import to_torchscript
from ember.errors import MisconfigurationError
from tiny import TinyModel

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit warns it is deprecated


@pytest.mark.parametrize("method", ["script", "trace"])
def test_to_torchscript_saves_a_module_that_computes_the_same(tmp_path, method):
    model = TinyModel()
    model.example_input_array = torch.randn(3, 4)
    x = torch.randn(5, 4)
    scripted = model.to_torchscript(tmp_path / "m.pt", method=method)
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    assert torch.allclose(loaded(x), model(x)) and torch.allclose(scripted(x), model(x))
    assert model.training  # eval only while exporting


def test_trace_takes_example_inputs_or_says_how_to_give_one():
    model = TinyModel()
    assert model.to_torchscript(method="trace", example_inputs=torch.ones(1, 4))(torch.ones(1, 4)).shape == (1, 2)
    with pytest.raises(MisconfigurationError, match="example_input_array"):
        model.to_torchscript(method="trace")
    with pytest.raises(ValueError, match="method must be 'script' or 'trace'; received 'compile'"):
        model.to_torchscript(method="compile")


def test_to_onnx_without_onnx_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError,
                       match=r"to_onnx needs the onnx( and onnxscript)? package\(s\).*pip install onnx"):
        TinyModel().to_onnx(tmp_path / "m.onnx", torch.ones(1, 4))


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="needs the onnx package (not installed here)")
def test_to_onnx_writes_a_model_onnx_can_check(tmp_path):
    import onnx

    TinyModel().to_onnx(tmp_path / "m.onnx", torch.ones(1, 4))
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))


def test_torchscript_files_written_by_two_processes_at_once_are_never_read_torn(tmp_path):
    """Every DDP rank of a program runs ``to_torchscript(file_path=...)`` on the same path: the file is written
    under a temporary name and renamed, so a reader sees one whole file (torch.jit.save in place tore 2-4 of 20
    reads here)."""
    model, path = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU()), tmp_path / "model.pt"
    pid = os.fork()
    torn = 0
    for _ in range(20):
        to_torchscript(model, path)
        try:
            torch.jit.load(path)
        except RuntimeError:
            torn += 1
    if pid == 0:
        os._exit(torn)
    _, status = os.waitpid(pid, 0)
    assert (torn, os.waitstatus_to_exitcode(status)) == (0, 0)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left behind
