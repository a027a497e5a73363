"""ModelSummary: a table of a model's layers (name, type, parameters, mode) and its totals."""

from __future__ import annotations

from torch import nn


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
