"""Claims: what a lesson says, as a measured statement whose truth is computed, never written.

A `Claim` is `value op threshold` (e.g. "sink rate > 25 %"); `holds` is derived from the
three, so a lesson can only state what it measured. A `LessonResult` is what a lesson's
`run()` returns: metrics per condition, claims, figure file names, notes, and the
conditions quick mode skipped (so that nothing a lesson advertises is dropped silently).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Claim:
    """A measured statement: `value op threshold`, e.g. sink rate > 25 (%)."""

    id: str
    text: str
    value: float
    op: str
    threshold: float

    def __post_init__(self):
        if self.op not in _OPS:
            raise ValueError(f"claim {self.id!r}: op must be one of {sorted(_OPS)}, got {self.op!r}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def holds(self) -> bool:
        return bool(math.isfinite(self.value) and _OPS[self.op](self.value, self.threshold))

    def as_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "value": self.value, "op": self.op,
                "threshold": self.threshold, "holds": self.holds}


@dataclass
class LessonResult:
    """What a lesson's run() returns: measured metrics per condition, claims, figure file names."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Conditions the lesson advertises but did not run (e.g. in quick mode), each with why."""

    def claim(self, id: str, text: str, value: float, op: str, threshold: float) -> Claim:
        """Add a claim (holds is computed) and return it."""
        c = Claim(id, text, value, op, threshold)
        self.claims.append(c)
        return c



__all__ = ["Claim", "LessonResult"]
