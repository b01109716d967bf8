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
    INCONCLUSIVE = "INCONCLUSIVE"  # over several seeds: it holds at some and not at others (:func:`over_seeds`)

    @classmethod
    def of(cls, holds: bool) -> "Verdict":
        return cls.REPRODUCED if holds else cls.NOT_REPRODUCED


class Differs(str, Enum):
    """Why a claim measured the paper's way does not hold here: the four kinds a researcher asks about."""

    SCALE = "scale"  # the paper's models, data or training are far larger than this preset's
    RECIPE = "recipe"  # iclab trains or measures in a way the paper does not (its settings say how)
    SUBJECT = "subject"  # the model studied is not of the kind the paper studied
    REFERENCE = "reference"  # the paper's own definition, figure or code does not support the claim as stated


@dataclass(frozen=True)
class Why:
    """One plain line of why a claim may not hold here, and its kind."""

    differs_by: Differs
    text: str

    def line(self) -> str:
        return f"{self.differs_by.value.capitalize()}: {self.text}"


def over_seeds(verdicts: "list[Verdict]") -> Verdict:
    """The one rule that turns a claim's verdicts at several seeds (one each) into the recipe's verdict: the verdict
    every seed gives, when they all give the same; INCONCLUSIVE when they differ (it holds at some seeds and not at
    others, or cannot be tested at some). No statistics: with 3 seeds, one that disagrees is enough to say the recipe
    does not decide the claim."""
    kinds = set(verdicts)
    if not kinds:
        raise ValueError("a verdict over seeds needs at least one seed's verdict")
    return kinds.pop() if len(kinds) == 1 else Verdict.INCONCLUSIVE


SHOWS_WHY = (Verdict.NOT_REPRODUCED, Verdict.INCONCLUSIVE)  # the verdicts shown with their claim's why


@dataclass(frozen=True)
class AtSeed:
    """What one seed's run gave for a claim: its verdict, the numbers in words and by name."""

    seed: int
    verdict: Verdict
    measured: str
    values: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """``statement``: the paper's claim (or, for MEASURED, what is measured); ``source``: where it comes from
    (paper, section or figure; "iclab" for iclab's own measurements); ``measured``: the numbers in words;
    ``thresholds``: the settings fields (name -> value) the verdict used; ``why``: why the claim may not hold
    here (shown with a NOT REPRODUCED verdict; every claim that can fail carries one); ``values``: the measured numbers the verdict reads, by name
    (unique within a study: a sweep makes each one a column of its results table); ``per_seed``: for a claim judged
    over several seeds (:func:`judge_over_seeds`), what each seed gave (``values`` then holds their means)."""

    statement: str
    verdict: Verdict
    measured: str
    source: str = ""
    thresholds: dict[str, float | str] = field(default_factory=dict)
    why: Why | None = None
    values: dict[str, float | None] = field(default_factory=dict)
    per_seed: list[AtSeed] = field(default_factory=list)

    def __post_init__(self) -> None:  # plain floats (numpy and torch scalars too); a non-finite number is None
        if self.verdict is Verdict.NOT_REPRODUCED and self.why is None:
            raise ValueError(f"claim {self.statement!r} does not hold and says no why: give it why=scale(...), recipe(...), "
                             "subject(...) or reference(...)")
        object.__setattr__(self, "values", {k: None if v is None or not math.isfinite(float(v)) else float(v)
                                            for k, v in self.values.items()})

    def line(self) -> str:
        """One plain line: 'VERDICT: statement (measured).'"""
        note = f" {self.why.line()}" if self.why is not None and self.verdict in SHOWS_WHY else ""
        return f"{self.verdict.value}: {self.statement} ({self.measured}).{note}"


def judge_over_seeds(claims_at: dict[int, list[Claim]]) -> list[Claim]:
    """One study's claims at several seeds (seed -> that run's claims) as one list judged by :func:`over_seeds`.

    Claims are matched by statement (in the first seed's order; one a seed did not make counts as NOT APPLICABLE
    there). Each keeps its statement, source and thresholds; ``per_seed`` holds every seed's verdict and numbers,
    ``values`` their mean (None where a seed has none), ``measured`` the count of each verdict and the first seed's
    words, ``why`` the first why a seed gave (the failing seeds' first, so a NOT REPRODUCED or INCONCLUSIVE claim says
    why it does not hold everywhere)."""
    if not claims_at:
        raise ValueError("judging over seeds needs at least one seed's claims")
    order: dict[str, Claim] = {}
    for claims in claims_at.values():
        for claim in claims:
            order.setdefault(claim.statement, claim)
    judged = []
    for statement, first in order.items():
        at = {seed: next((c for c in claims if c.statement == statement), None) for seed, claims in claims_at.items()}
        per_seed = [AtSeed(seed, c.verdict, c.measured, dict(c.values)) if c is not None
                    else AtSeed(seed, Verdict.NOT_APPLICABLE, "this seed's run made no such claim") for seed, c in at.items()]
        verdict = over_seeds([a.verdict for a in per_seed])
        made = [c for c in at.values() if c is not None]
        whys = [c.why for c in made if c.why is not None and c.verdict is Verdict.NOT_REPRODUCED] + \
               [c.why for c in made if c.why is not None]
        names = list(dict.fromkeys(k for c in made for k in c.values))
        values = {k: (None if any(a.values.get(k) is None for a in per_seed) else
                      sum(a.values[k] for a in per_seed) / len(per_seed)) for k in names}
        counts = ", ".join(f"{n} {v.value}" for v in Verdict if (n := sum(a.verdict is v for a in per_seed)))
        words = f"over {plural(len(per_seed), 'seed')}: {counts}; seed {per_seed[0].seed}: {per_seed[0].measured}"
        judged.append(Claim(statement, verdict, words, first.source, dict(first.thresholds), whys[0] if whys else None,
                            values, per_seed))
    return judged


def scale(text: str) -> Why:
    return Why(Differs.SCALE, text)


def recipe(text: str) -> Why:
    return Why(Differs.RECIPE, text)


def subject(text: str) -> Why:
    return Why(Differs.SUBJECT, text)


def reference(text: str) -> Why:
    return Why(Differs.REFERENCE, text)


def at_scale(here: str, paper: str, smaller: bool) -> Why:
    """The why of a claim that reads a preset's trained models: ``here`` (this preset's sizes) against ``paper`` (the
    paper's); at the paper's sizes (``smaller`` false) what is left is the recipe."""
    if smaller:
        return scale(f"{here}; the paper's: {paper}")
    return recipe(f"{here}, the paper's sizes; iclab's recipe (initialisation, data stream, seed) is not the authors'")


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``n noun`` with the noun in the plural (``nouns``, default noun + s) unless n is 1: "1 main head", "3 main heads"."""
    return f"{n} {noun}" if n == 1 else f"{n} {nouns or noun + 's'}"


def plus_minus(value: float, error: float) -> str:
    """``value +- error`` with the error to two significant figures and the value to the same decimal place (a
    standard error of 0.04 reads 0.040, not 0.0)."""
    if not (math.isfinite(error) and error > 0):
        return f"{value:.3g} +- {error:.2g}"
    decimals = max(0, 1 - math.floor(math.log10(error)))
    return f"{value:.{decimals}f} +- {error:.{decimals}f}"


def measured(statement: str, numbers: str, source: str = "", values: dict[str, float | None] | None = None) -> Claim:
    """A MEASURED line: ``statement`` with its ``numbers`` (in words, and by name in ``values``)."""
    return Claim(statement, Verdict.MEASURED, numbers, source, values=dict(values or {}))
