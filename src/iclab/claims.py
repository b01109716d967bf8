"""Claims: a paper's statement next to what a run measured, with a typed verdict.

A study's findings are a list of :class:`Claim`. The report and
``summary.json`` read these objects (:class:`iclab.studies.common.Summary`'s ``claims``, stored by
:func:`iclab.results.encode`); ``summary["findings"]``
keeps each claim as one plain line for people and scripts, and nothing parses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum


class Verdict(str, Enum):
    REPRODUCED = "REPRODUCED"  # the paper's claim, measured the paper's way, holds here
    NOT_REPRODUCED = "NOT REPRODUCED"  # measured the paper's way, it does not hold (the measurement says why)
    MEASURED = "MEASURED"  # a number reported without a verdict (iclab's own measurement, or context)
    NOT_APPLICABLE = "NOT APPLICABLE"  # the claim cannot be tested on this model (the measurement says why)

    @classmethod
    def of(cls, holds: bool) -> "Verdict":
        return cls.REPRODUCED if holds else cls.NOT_REPRODUCED


@dataclass(frozen=True)
class Claim:
    """``statement``: the paper's claim (or, for MEASURED, what is measured); ``source``: where it comes from
    (paper, section or figure; "iclab" for iclab's own measurements); ``measured``: the numbers in words;
    ``thresholds``: the settings fields (name -> value) the verdict used; ``scale_note``: why a verdict may
    differ at this scale (empty when it does not apply); ``values``: the measured numbers the verdict reads, by name
    (unique within a study: a sweep makes each one a column of its results table)."""

    statement: str
    verdict: Verdict
    measured: str
    source: str = ""
    thresholds: dict[str, float | str] = field(default_factory=dict)
    scale_note: str = ""
    values: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:  # plain floats (numpy and torch scalars too); a non-finite number is None
        object.__setattr__(self, "values", {k: None if v is None or not math.isfinite(float(v)) else float(v)
                                            for k, v in self.values.items()})

    def line(self) -> str:
        """One plain line: 'VERDICT: statement (measured).'"""
        note = f" {self.scale_note}" if self.scale_note and self.verdict is Verdict.NOT_REPRODUCED else ""
        return f"{self.verdict.value}: {self.statement} ({self.measured}).{note}"


def measured(statement: str, numbers: str, source: str = "", values: dict[str, float | None] | None = None) -> Claim:
    """A MEASURED line: ``statement`` with its ``numbers`` (in words, and by name in ``values``)."""
    return Claim(statement, Verdict.MEASURED, numbers, source, values=dict(values or {}))
