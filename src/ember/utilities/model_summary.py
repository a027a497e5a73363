"""ModelSummary: a table of a model's layers (name, type, parameters, mode) and its totals."""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

from ember import not_supported as _not_supported


def human_count(n: int) -> str:
    """``123``, ``1.2 K``, ``50.4 K``, ``101 K``, ``3.4 M``..."""
    if n < 1000:
        return str(int(n))
    value = float(n)
    for unit in ("K", "M", "B", "T"):
        value /= 1000.0
        if value < 1000 or unit == "T":
            return f"{value:.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    raise AssertionError("unreachable")


def check_max_depth(max_depth: int) -> None:
    if not isinstance(max_depth, int) or max_depth < -1:
        raise ValueError(f"max_depth must be an int >= -1 (-1 for every layer); received {max_depth!r}")


class ModelSummary:
    """The layers of ``model`` down to ``max_depth`` (1: its direct children; -1: every layer; 0: none)
    and the counts of trainable, non-trainable and all parameters. ``str(summary)`` is the table."""

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        check_max_depth(max_depth)
        self.model = model
        self.max_depth = max_depth

    @property
    def layers(self) -> list[tuple[str, nn.Module]]:
        if self.max_depth == 0:
            return []
        return [(name, m) for name, m in self.model.named_modules()
                if name and (self.max_depth == -1 or name.count(".") < self.max_depth)]

    @property
    def layer_names(self) -> list[str]:
        return [name for name, _ in self.layers]

    @property
    def param_nums(self) -> list[int]:
        return [sum(p.numel() for p in m.parameters()) for _, m in self.layers]

    @property
    def total_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def model_size(self) -> float:
        """The parameters' size in MB."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters()) / 1e6

    def rows(self) -> list[list[str]]:
        return [[str(i), name, type(m).__name__, human_count(n), "train" if m.training else "eval"]
                for i, ((name, m), n) in enumerate(zip(self.layers, self.param_nums))]

    def __str__(self) -> str:
        header = ["", "Name", "Type", "Params", "Mode"]
        rows = self.rows()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        rule = "-" * max(len(line(header)), 40)
        out = [line(header), rule, *(line(r) for r in rows), rule] if rows else []
        total, trainable = self.total_parameters, self.trainable_parameters
        out += [f"{human_count(trainable):<10}Trainable params",
                f"{human_count(total - trainable):<10}Non-trainable params",
                f"{human_count(total):<10}Total params",
                f"{self.model_size:<10.3f}Total estimated model params size (MB)"]
        return "\n".join(out)

    __repr__ = __str__


def summarize(model: nn.Module, max_depth: int = 1) -> ModelSummary:
    return ModelSummary(model, max_depth=max_depth)


def get_human_readable_count(number: int) -> str:
    """A parameter count as Lightning's summary shows it: ``"123  "`` (a blank unit), ``"1.2 K"``, ``"3.4 M"``.

    Args:
        number: a non-negative count.
    """
    if number < 0:
        raise ValueError(f"a count must be >= 0; received {number}.")
    return human_count(number) + ("  " if number < 1000 else "")  # Lightning's blank unit keeps columns aligned


def get_formatted_model_size(total_model_size: float) -> str:
    """A size in MB with three decimals and thousands separators (``"1,234.568"``).

    Args:
        total_model_size: the size in MB.
    """
    return f"{total_model_size:,.3f}"


def parse_batch_shape(batch: Any) -> Any:
    """The shape of a batch: a tensor's shape as a list, a list of shapes for lists and tuples, ``"?"`` otherwise.

    Args:
        batch: a tensor, or lists and tuples of them.
    """
    if hasattr(batch, "shape"):
        return list(batch.shape)
    if isinstance(batch, (list, tuple)):
        return [parse_batch_shape(item) for item in batch]
    return "?"


class LayerSummary:
    """One layer's row in the summary: its type, parameter count and mode, and (once :meth:`record` has run a
    forward pass through it) its input and output shapes.

    Args:
        module: the layer.
    """

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self._in: Any = "?"
        self._out: Any = "?"

    def record(self) -> Any:
        """Start recording the shapes of the next forward call; returns the hook handle (``.remove()`` it)."""

        def hook(_module: nn.Module, inputs: Any, output: Any) -> None:
            self._in = parse_batch_shape(inputs[0] if len(inputs) == 1 else inputs)
            self._out = parse_batch_shape(output)

        return self._module.register_forward_hook(hook)

    @property
    def in_size(self) -> Any:
        """The shape of the layer's input in the recorded forward pass (``"?"`` before one)."""
        return self._in

    @property
    def out_size(self) -> Any:
        """The shape of the layer's output in the recorded forward pass (``"?"`` before one)."""
        return self._out

    @property
    def layer_type(self) -> str:
        """The layer's class name."""
        return type(self._module).__name__

    @property
    def num_parameters(self) -> int:
        """The parameters in the layer and its children."""
        return sum(p.numel() for p in self._module.parameters())

    @property
    def training(self) -> bool:
        """Whether the layer is in training mode."""
        return self._module.training


# Lightning's ``utilities.model_summary`` is a package: ``model_summary`` (this module's names) and
# ``model_summary_deepspeed`` (not supported). Until this file becomes that package, both paths import.
__path__: list[str] = []
sys.modules[__name__ + ".model_summary"] = sys.modules[__name__]
_not_supported.install("utilities.model_summary")
