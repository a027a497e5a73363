"""``lightning.pytorch.utilities.enums``: string enums that compare equal to their values, ignoring case."""

from __future__ import annotations

from enum import Enum
from typing import Any


class LightningEnum(str, Enum):
    """A string enum: ``GradClipAlgorithmType.NORM == "norm"`` and ``== "NORM"`` are both True."""

    @classmethod
    def from_str(cls, value: str, source: str = "key") -> Any:
        """The member whose name (``source="key"``), value (``"value"``) or either (``"any"``) is ``value``,
        ignoring case; None when there is none.

        Args:
            value: the text to look up.
            source: where to look: ``"key"``, ``"value"`` or ``"any"``.
        """
        wanted = value.lower()
        for member in cls:
            if source in ("key", "any") and member.name.lower() == wanted:
                return member
            if source in ("value", "any") and str(member.value).lower() == wanted:
                return member
        return None

    def __eq__(self, other: object) -> bool:
        other = other.value if isinstance(other, Enum) else other
        return isinstance(other, str) and self.value.lower() == other.lower()

    def __hash__(self) -> int:
        return hash(self.value.lower())

    def __str__(self) -> str:
        return self.value


class GradClipAlgorithmType(LightningEnum):
    """How ``gradient_clip_val`` clips: ``NORM`` scales all gradients together so their norm is at most the
    value; ``VALUE`` clamps each gradient element into ``[-value, value]``."""

    VALUE = "value"
    NORM = "norm"

    @staticmethod
    def supported_type(val: str) -> bool:
        """Whether ``val`` names a member.

        Args:
            val: ``"norm"`` or ``"value"`` (any case).
        """
        return any(member == val for member in GradClipAlgorithmType)

    @staticmethod
    def supported_types() -> list[str]:
        """The accepted values: ``["value", "norm"]``."""
        return [member.value for member in GradClipAlgorithmType]


__all__ = ["GradClipAlgorithmType", "LightningEnum"]
