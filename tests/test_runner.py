"""The one study runner on a toy study: parts keyed by what they depend on, earlier parts' keys, skipped and derived parts,
typed claims in the summary, refusals before the folder is touched."""

from dataclasses import dataclass, field

import pytest
import torch

from iclab.claims import Claim, Verdict
from iclab.errors import IclabError
from iclab.studies.runner import Part, Study


@dataclass(frozen=True)
class Thresholds:
    least: float = 5.0


@dataclass(frozen=True)
class Toy:
    preset: str = "quick"
    a: int = 2
    b: int = 3
    gate: bool = True
    thresholds: Thresholds = field(default_factory=Thresholds)


def toy_study(calls: list[str], check=None) -> Study:
    def part(name, value):
        def compute(ctx):
            calls.append(name)
            return value(ctx)
        return compute

    parts = [
        Part("square", part("square", lambda ctx: ctx.settings.a ** 2), depends=lambda s: s.a),
        Part("plus_b", part("plus_b", lambda ctx: ctx.results["square"] + ctx.settings.b), depends=lambda s: s.b, needs=("square",)),
        Part("double", part("double", lambda ctx: 2 * ctx.results["plus_b"]), cached=False),
        Part("gated", part("gated", lambda ctx: 1), when=lambda ctx: ctx.settings.gate),
    ]

    def claims(s, res):
        value = res["double"]
        return [Claim("double is large", Verdict.of(value > s.thresholds.least), f"{value}", "toy",
                      {"thresholds.least": s.thresholds.least})], {"double": value, "gated": "gated" in res}

    return Study("toy", {"quick": Toy()}, parts=lambda s: parts, claims=claims, figures=lambda res, s, folder: [],
                 models=lambda ctx: calls.append("models"), check=check)


def test_parts_recompute_only_when_what_they_read_changes(tmp_path):
    calls: list[str] = []
    study = toy_study(calls)
    summary = study.run("quick", tmp_path, [], torch.device("cpu"), log=lambda s: None)
    assert summary["double"] == 14 and summary["gated"] and summary["claims"][0]["verdict"] == "REPRODUCED"
    assert calls == ["models", "square", "plus_b", "double", "gated"]
    calls.clear()
    summary = study.run("quick", tmp_path, ["b=4"], torch.device("cpu"), log=lambda s: None)
    # square reads only a: kept; plus_b reads b; gated is keyed by every setting but the thresholds
    assert calls == ["models", "plus_b", "double", "gated"] and summary["double"] == 16
    calls.clear()
    summary = study.run("quick", tmp_path, ["b=4", "thresholds.least=100"], torch.device("cpu"), log=lambda s: None)
    assert calls == ["models", "double"]  # a threshold re-judges without recomputing
    assert summary["claims"][0]["verdict"] == "NOT REPRODUCED" and summary["claims"][0]["thresholds"] == {"thresholds.least": 100.0}
    calls.clear()
    study.run("quick", tmp_path, ["a=3", "b=4"], torch.device("cpu"), log=lambda s: None)
    assert calls == ["models", "square", "plus_b", "double", "gated"]  # plus_b reads square: its key follows square's


def test_a_part_whose_condition_fails_is_skipped(tmp_path):
    calls: list[str] = []
    summary = toy_study(calls).run("quick", tmp_path, ["gate=false"], torch.device("cpu"), log=lambda s: None)
    assert "gated" not in calls and summary["gated"] is False and not (tmp_path / "parts" / "gated.json").exists()
    assert not (tmp_path / "parts" / "double.json").exists()  # derived, never written


def test_bad_settings_and_a_failed_check_leave_no_folder(tmp_path):
    def refuse(settings):
        raise IclabError("--model nowhere: no such model")

    with pytest.raises(IclabError, match="a: got .x."):
        toy_study([]).run("quick", tmp_path / "a", ["a=x"], torch.device("cpu"), log=lambda s: None)
    with pytest.raises(IclabError, match="no such model"):
        toy_study([], check=refuse).run("quick", tmp_path / "b", [], torch.device("cpu"), log=lambda s: None)
    with pytest.raises(IclabError, match="preset"):
        toy_study([]).run("paper", tmp_path / "c", [], torch.device("cpu"), log=lambda s: None)
    assert not any((tmp_path / n).exists() for n in "abc")
