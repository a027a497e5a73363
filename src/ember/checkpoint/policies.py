"""When to save, which checkpoints to keep, and what they are called: small pure policies, no I/O.

*When*: a save opportunity is a ``SavePoint`` (facts from the loop); a policy answers
``due(point) -> bool`` and a manager saves when any of its policies is due.
*Keep*: a policy maps the known checkpoints (``Record``s, oldest first) to one bool each; a
checkpoint survives when any of the manager's keep policies keeps it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from ember.errors import MisconfigurationError

# ----------------------------------------------------------------------------- when


@dataclass(frozen=True)
class SavePoint:
    """Where training is when a save could happen."""

    epoch: int
    global_step: int
    epoch_end: bool            # the epoch has just finished (after validation)
    now: float                 # time.monotonic()
    last_save_time: float      # time.monotonic() of this manager's previous save (or of fit start)


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


# ----------------------------------------------------------------------------- keep


@dataclass(frozen=True)
class Record:
    """One checkpoint a manager wrote: its name in the store, position and monitored score."""

    name: str
    epoch: int
    global_step: int
    score: float | None = None


def sort_key(score: float | None, mode: str) -> float:
    """Smaller is better; NaN (and no score) is worst."""
    if score is None or math.isnan(score):
        return math.inf
    return score if mode == "min" else -score


@dataclass(frozen=True)
class BestK:
    """Keep the k best by score (all when k < 0); ties keep the earlier checkpoint."""

    k: int
    mode: str = "min"

    def keep(self, records: Sequence[Record]) -> list[bool]:
        ranked = sorted(range(len(records)), key=lambda i: sort_key(records[i].score, self.mode))
        kept = set(ranked if self.k < 0 else ranked[: self.k])
        return [i in kept for i in range(len(records))]


@dataclass(frozen=True)
class LatestN:
    """Keep the n newest (the last n of the list; all when n < 0)."""

    n: int

    def keep(self, records: Sequence[Record]) -> list[bool]:
        first = 0 if self.n < 0 else max(0, len(records) - self.n)
        return [i >= first for i in range(len(records))]


@dataclass(frozen=True)
class EveryNStepsForGood:
    """Milestones: keep every checkpoint whose global step is a multiple of n."""

    n: int

    def keep(self, records: Sequence[Record]) -> list[bool]:
        return [r.global_step > 0 and r.global_step % self.n == 0 for r in records]


def kept(records: Sequence[Record], policies: Sequence) -> list[bool]:
    """A checkpoint survives when any policy keeps it."""
    masks = [p.keep(records) for p in policies]
    return [any(m[i] for m in masks) for i in range(len(records))]


def ranked(records: Sequence[Record], mode: str) -> list[Record]:
    """Best first by score; records without a score by recency (newest first)."""
    if all(r.score is None for r in records):
        return list(reversed(records))
    return sorted(records, key=lambda r: sort_key(r.score, mode))


# ----------------------------------------------------------------------------- names

_FIELD = re.compile(r"\{([^{}:!]+)((?:![rsa])?(?::[^{}]*)?)\}")
_UNSAFE = re.compile(r"[/\\\x00-\x1f]")


def check_template(template: str) -> None:
    """A file-name template names a file inside ``dirpath``: no folders, no absolute paths, no ``..``."""
    literal = _FIELD.sub("", template)
    if template.startswith(("/", "\\")) or "/" in literal or "\\" in literal or template.strip() in (".", ".."):
        raise MisconfigurationError(
            f"ModelCheckpoint filename={template!r} must name a file inside dirpath: no '/', no absolute path "
            "and no '..'. Put the folder in dirpath=... and keep filename a plain template such as "
            "'{epoch}-{val_loss:.2f}'.")


def format_filename(template: str, values: Mapping[str, object], auto_insert_metric_name: bool = True) -> str:
    """``"{epoch}-{val_loss:.2f}"`` -> ``"epoch=3-val_loss=0.12"``; unknown names format as ``nan``.

    Path separators and control characters in metric names and values become ``_``, so a metric
    named ``val/loss`` cannot put the file in a sub-folder."""

    def field(m: re.Match) -> str:
        name, spec = m.group(1), m.group(2)
        value = values.get(name, float("nan"))
        try:
            text = ("{0" + spec + "}").format(value)
        except (ValueError, TypeError):
            text = str(value)
        return _UNSAFE.sub("_", f"{name}={text}" if auto_insert_metric_name else text)

    name = _FIELD.sub(field, template)
    return "_" + name if name in (".", "..") else name
