"""Typed claims: verdicts from an enum, thresholds named, the report reads the objects (never the lines)."""

import json

from iclab.claims import Claim, Verdict, measured
from iclab.report import build_report
from iclab.results import decode, encode
from iclab.studies.common import RunIdentity, Summary


def test_a_claim_renders_one_line_and_round_trips():
    c = Claim("induction heads exist", Verdict.of(True), "14 heads >= 0.3", "Olsson et al. 2022", {"induction_threshold": 0.3})
    assert c.line() == "REPRODUCED: induction heads exist (14 heads >= 0.3)."
    assert decode(Claim, json.loads(json.dumps(encode(c)))) == c
    scaled = Claim("a phase change", Verdict.of(False), "no window", scale_note="Budget: 7M tokens, the paper's billions.")
    assert scaled.line().endswith("Budget: 7M tokens, the paper's billions.")
    assert measured("ICL score", "-0.24 nats").verdict is Verdict.MEASURED


def test_the_report_shows_each_verdict_with_its_source_and_thresholds(tmp_path):
    claims = [Claim("heads carry the task", Verdict.NOT_APPLICABLE, "accuracy 0.05", "Hu et al. 2025", {"min_clean_accuracy": 0.5}),
              Claim("loss falls", Verdict.NOT_REPRODUCED, "it did not", "paper, fig 1")]
    (tmp_path / "s").mkdir()
    # the line says REPRODUCED, the claim NOT APPLICABLE: the report must follow the typed claim
    Summary("s", "quick", RunIdentity("0", "0", "test"), {}, claims, ["REPRODUCED: misleading line", "x"], [], {}, []).write(tmp_path / "s")
    (tmp_path / "reproduce.json").write_text(json.dumps({"preset": "quick", "studies": {"s": {"status": "complete"}}}))
    page = build_report(tmp_path).read_text()
    assert 'class="badge na">not applicable' in page and 'class="badge bad">not reproduced' in page
    assert "min_clean_accuracy = 0.5" in page and "Hu et al. 2025" in page
    assert "misleading line" not in page
