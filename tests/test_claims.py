"""Typed claims: verdicts from an enum, thresholds named, the report reads the objects (never the lines)."""

import json

import pytest

from iclab.claims import Claim, Verdict, measured, recipe, scale
from iclab.report import build_report
from iclab.results import decode, encode
from iclab.studies.common import RunIdentity, Summary


def test_a_claim_renders_one_line_and_round_trips():
    c = Claim("induction heads exist", Verdict.of(True), "14 heads >= 0.3", "Olsson et al. 2022", {"induction_threshold": 0.3})
    assert c.line() == "REPRODUCED: induction heads exist (14 heads >= 0.3)."
    assert decode(Claim, json.loads(json.dumps(encode(c)))) == c
    scaled = Claim("a phase change", Verdict.of(False), "no window", why=scale("7M tokens; the paper's: billions"))
    assert scaled.line().endswith("no window). Scale: 7M tokens; the paper's: billions")
    assert decode(Claim, json.loads(json.dumps(encode(scaled)))) == scaled
    with pytest.raises(ValueError, match="does not hold and says no why"):
        Claim("a phase change", Verdict.NOT_REPRODUCED, "no window")
    assert measured("ICL score", "-0.24 nats").verdict is Verdict.MEASURED


def test_the_report_shows_each_verdict_with_its_source_and_thresholds(tmp_path):
    claims = [Claim("heads carry the task", Verdict.NOT_APPLICABLE, "accuracy 0.05", "Hu et al. 2025", {"min_clean_accuracy": 0.5}),
              Claim("loss falls", Verdict.NOT_REPRODUCED, "it did not", "paper, fig 1", why=recipe("a toy recipe"))]
    (tmp_path / "s").mkdir()
    # the line says REPRODUCED, the claim NOT APPLICABLE: the report must follow the typed claim
    Summary("s", "quick", RunIdentity("0", "0", "test"), {}, claims, ["REPRODUCED: misleading line", "x"], [], {}, []).write(tmp_path / "s")
    (tmp_path / "reproduce.json").write_text(json.dumps({"preset": "quick", "studies": {"s": {"status": "complete"}}}))
    page = build_report(tmp_path).read_text()
    assert 'class="badge na">not applicable' in page and 'class="badge bad">not reproduced' in page
    assert "min_clean_accuracy = 0.5" in page and "Hu et al. 2025" in page
    assert "misleading line" not in page


def test_each_failing_claim_shows_its_why_and_the_study_a_takeaway(tmp_path):
    from iclab.claims import subject
    from iclab.report import takeaway

    claims = [Claim("heads carry the task", Verdict.NOT_REPRODUCED, "lift 0.04 -> 0.04", "Hu et al. 2025",
                    values={"zero_shot_accuracy": 0.04, "selected_fv_accuracy": 0.04}, why=subject("a model trained on add-k alone")),
              Claim("loss falls", Verdict.NOT_REPRODUCED, "it did not", why=scale("1k steps; the paper's: 500k")),
              Claim("a held claim", Verdict.REPRODUCED, "it held", why=scale("never shown: the claim holds")),
              measured("ICL score", "-0.24 nats")]
    assert takeaway(claims) == "1 of 3 claims reproduced; 2 not (scale 1, subject 1); 1 measurement without a verdict"
    (tmp_path / "s").mkdir()
    Summary("s", "quick", RunIdentity("0", "0", "test"), {}, claims, [c.line() for c in claims], [], {}, []).write(tmp_path / "s")
    (tmp_path / "reproduce.json").write_text(json.dumps({"preset": "quick", "wall_time_s": 1348.2, "peak_memory_gb": 2.07,
                                                         "studies": {"s": {"status": "complete"}}}))
    page = build_report(tmp_path).read_text()
    assert "1 of 3 claims reproduced; 2 not (scale 1, subject 1)" in page
    assert "<b>subject</b>: a model trained on add-k alone" in page and "<b>scale</b>: 1k steps" in page
    assert "never shown" not in page  # a why belongs to a claim that does not hold
    assert "<td>selected_fv_accuracy</td><td>0.04</td>" in page  # the numbers as a table
    assert "run time 22 min 28 s" in page and "peak memory 2.07 GB" in page


def test_a_wide_figure_spans_the_page_and_a_square_one_does_not(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from iclab.report import _figure, png_size

    for name, size in (("strip", (25, 4)), ("square", (5, 4))):
        fig = plt.figure(figsize=size, dpi=100)
        fig.savefig(tmp_path / f"{name}.png")
        plt.close(fig)
    assert png_size(tmp_path / "strip.png") == (2500, 400)
    assert 'class="fig full"' in _figure(tmp_path / "strip.png")
    assert 'class="fig"' in _figure(tmp_path / "square.png")
    (tmp_path / "not.png").write_bytes(b"GIF89a" + bytes(30))
    assert png_size(tmp_path / "not.png") is None


def test_the_verdict_over_seeds_is_the_one_they_share_and_inconclusive_when_they_differ():
    from iclab.claims import over_seeds

    R, N, NA, M, I = (Verdict.REPRODUCED, Verdict.NOT_REPRODUCED, Verdict.NOT_APPLICABLE, Verdict.MEASURED,
                      Verdict.INCONCLUSIVE)
    assert over_seeds([R, R, R]) is R  # holds at every seed
    assert over_seeds([N, N, N]) is N  # fails at every seed
    assert over_seeds([R, N, R]) is I  # split: the recipe does not decide it
    assert over_seeds([NA, NA]) is NA and over_seeds([M]) is M
    assert over_seeds([R, NA, R]) is I  # untestable at one seed: not decided either
    with pytest.raises(ValueError):
        over_seeds([])


def test_claims_judged_over_seeds_keep_each_seeds_numbers_and_the_report_shows_them(tmp_path):
    from iclab.claims import judge_over_seeds
    from iclab.report import takeaway

    def at(holds: bool, lift: float, extra: bool = True) -> list[Claim]:
        claims = [Claim("a function vector lifts zero-shot accuracy", Verdict.of(holds), f"lift {lift}", "Hu et al. 2025",
                        {"min_fv_gain": 0.5}, why=scale("one layer"), values={"fv_lift": lift}),
                  Claim("loss falls", Verdict.NOT_REPRODUCED, "it did not", why=recipe("a toy recipe"), values={"loss_drop": 0.1}),
                  measured("ICL score", f"{lift} nats", values={"icl_score": lift})]
        return claims + ([Claim("a late claim", Verdict.REPRODUCED, "held")] if extra else [])

    judged = judge_over_seeds({0: at(True, 0.6), 1: at(True, 0.8), 2: at(False, 0.1, extra=False)})
    split, fails, score, late = judged
    assert [c.verdict for c in judged] == [Verdict.INCONCLUSIVE, Verdict.NOT_REPRODUCED, Verdict.MEASURED, Verdict.INCONCLUSIVE]
    assert [a.seed for a in split.per_seed] == [0, 1, 2]
    assert [a.values["fv_lift"] for a in split.per_seed] == [0.6, 0.8, 0.1]
    assert split.values["fv_lift"] == pytest.approx(0.5)  # the mean over the seeds
    assert split.thresholds == {"min_fv_gain": 0.5} and split.source == "Hu et al. 2025"
    assert split.measured.startswith("over 3 seeds: 2 REPRODUCED, 1 NOT REPRODUCED; seed 0: lift 0.6")
    assert split.why.text == "one layer" and "Scale: one layer" in split.line()  # why it does not hold everywhere
    assert fails.why.text == "a toy recipe"
    assert late.per_seed[2].verdict is Verdict.NOT_APPLICABLE  # a seed that made no such claim cannot decide it
    assert decode(Claim, json.loads(json.dumps(encode(split)))) == split
    assert takeaway(judged) == ("0 of 3 claims reproduced; 1 not (recipe 1); 2 inconclusive (the seeds disagree); "
                                "1 measurement without a verdict")
    same = judge_over_seeds({4: at(True, 0.6), 5: at(True, 0.7)})
    assert same[0].verdict is Verdict.REPRODUCED and same[3].verdict is Verdict.REPRODUCED

    (tmp_path / "s").mkdir()
    Summary("s", "quick", RunIdentity("0", "0", "test"), {}, judged, [c.line() for c in judged], [], {}, []).write(tmp_path / "s")
    (tmp_path / "reproduce.json").write_text(json.dumps({"preset": "quick", "studies": {"s": {"status": "complete"}}}))
    page = build_report(tmp_path).read_text()
    assert "Verdicts over 3 seeds: 2 claims inconclusive" in page
    assert "<td>fv_lift</td><td>0.6</td><td>0.8</td><td>0.1</td><td>0.5</td>" in page  # each seed's value, then the mean
    assert page.count('class="badge na">inconclusive') >= 2 and "seed 2: lift 0.1" in page
    Summary("s", "quick", RunIdentity("0", "0", "test"), {}, same, [c.line() for c in same], [], {}, []).write(tmp_path / "s")
    assert "Verdicts over 2 seeds: the seeds agree on every claim." in build_report(tmp_path).read_text()
