"""Table-driven claim tests: a claim's verdict on hand-built typed results, one case where it holds and one where not."""

from iclab.claims import Verdict


def verdict(findings, settings, results, starts: str) -> Verdict:
    """The verdict of the claim whose statement starts with ``starts``."""
    claims, _ = findings(settings, results)
    seen: dict[str, float | None] = {}
    for c in claims:  # a claim with a verdict names the numbers it read; a name means one number across the study
        assert c.values or c.verdict in (Verdict.NOT_APPLICABLE,), f"no values: {c.statement}"
        for name, value in c.values.items():
            assert seen.setdefault(name, value) == value or value != value, f"{name} names two numbers"
    return next(c for c in claims if c.statement.startswith(starts)).verdict


def holds_and_fails(findings, settings, make, claim: str, holds: dict, fails: dict) -> None:
    """``make(**holds)`` gives results where ``claim`` is REPRODUCED; ``make(**fails)`` where it is NOT REPRODUCED."""
    assert verdict(findings, settings, make(**holds), claim) is Verdict.REPRODUCED
    assert verdict(findings, settings, make(**fails), claim) is Verdict.NOT_REPRODUCED
