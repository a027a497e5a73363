"""When to save and which checkpoints to keep: small pure policies, no I/O.

A save opportunity is described by a ``SavePoint`` (facts from the loop). "When" policies answer
``due(point) -> bool``; a checkpoint callback saves when any of its policies is due, so policies
compose by adding them. "Keep" policies turn the known checkpoints into the ones to keep.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class SavePoint:
    """Where training is when a save could happen."""

    epoch: int
    global_step: int
    epoch_end: bool            # the epoch has just finished (after validation)
    now: float                 # time.monotonic()
    last_save_time: float      # time.monotonic() of this callback's previous save (or of fit start)


@dataclass(frozen=True)
class EveryNEpochs:
    """At the end of every n-th epoch."""

    n: int

    def due(self, p: SavePoint) -> bool:
        return p.epoch_end and (p.epoch + 1) % self.n == 0


@dataclass(frozen=True)
class EveryNSteps:
    """After every n-th optimizer step."""

    n: int

    def due(self, p: SavePoint) -> bool:
        return not p.epoch_end and p.global_step > 0 and p.global_step % self.n == 0


@dataclass(frozen=True)
class EveryInterval:
    """After the optimizer step that follows ``seconds`` of training since the last save."""

    seconds: float

    def due(self, p: SavePoint) -> bool:
        return not p.epoch_end and p.now - p.last_save_time >= self.seconds


def sort_key(score: float, mode: str) -> float:
    """Smaller is better; NaN is worst."""
    if math.isnan(score):
        return math.inf
    return score if mode == "min" else -score


def better(candidate: float, than: float, mode: str) -> bool:
    return sort_key(candidate, mode) < sort_key(than, mode)


def top_k(scores: Mapping[str, float], k: int, mode: str) -> list[str]:
    """The paths to keep: the k best by score (all when k < 0); ties keep the earlier entry."""
    ranked = sorted(scores, key=lambda p: sort_key(scores[p], mode))
    return ranked if k < 0 else ranked[:k]


_FIELD = re.compile(r"\{([^{}:!]+)((?:![rsa])?(?::[^{}]*)?)\}")


def format_filename(template: str, values: Mapping[str, object], auto_insert_metric_name: bool = True) -> str:
    """``"{epoch}-{val_loss:.2f}"`` -> ``"epoch=3-val_loss=0.12"``; unknown names format as ``nan``."""

    def field(m: re.Match) -> str:
        name, spec = m.group(1), m.group(2)
        value = values.get(name, float("nan"))
        try:
            text = ("{0" + spec + "}").format(value)
        except (ValueError, TypeError):
            text = str(value)
        return f"{name}={text}" if auto_insert_metric_name else text

    return _FIELD.sub(field, template)


def template_fields(template: str) -> Iterable[str]:
    return [m.group(1) for m in _FIELD.finditer(template)]
