"""The induction study's claims, table-driven on hand-built typed results: for each claim a case where it holds and one
where it does not (NOT APPLICABLE where nothing can be tested)."""

from dataclasses import replace

import pytest
from claim_cases import holds_and_fails
from claim_cases import verdict as claim_verdict

from iclab.analysis.circuits import HeadMechanism, Mechanism
from iclab.analysis.induction.phase_change import LossPCA, PhaseChange, Window
from iclab.analysis.induction.runs import Ablations, Attribution, TextAttribution, Trajectory
from iclab.analysis.induction.scores import InductionHead, SnapshotScores
from iclab.claims import Verdict
from iclab.results import Head
from iclab.runs import TrainCurve
from iclab.studies.induction.claims import findings
from iclab.studies.induction.settings import PRESETS

CFG = replace(PRESETS["quick"], models=("attn1", "attn2", "smeared1", "smeared2"))
LAYERS = {"attn1": 1, "attn2": 2, "smeared1": 1, "smeared2": 2}


def trajectory(m: str, icl: float, previous_token: float) -> Trajectory:
    L = LAYERS[m]
    heads = [[0.0, 0.0] for _ in range(L)]
    prev = [[previous_token, 0.0]] + [[0.0, 0.0] for _ in range(L - 1)]
    snap = SnapshotScores({"mixture": icl, "natural": icl / 10}, {"mixture": 2.0, "natural": 3.0}, [1.0], heads, prev, heads, heads)
    return Trajectory([0, 100], [0, 10**6], [snap, snap], TrainCurve([0], [3.0]), 10**4)


def results(window_share=0.9, window_start=1e5, bump=True, attn1_heads=False, attn1_window=False, smeared1_heads=True,
            drop=0.9, previous_token=0.8, k_best=Head(0, 0), ov=0.9, p_value=1e-4, attribution=True):
    def window(start):
        return Window(start, start * 3, window_share)

    def phase(m):
        has = m != "attn1" or attn1_window
        start = window_start if m != "smeared2" else window_start / 4
        return PhaseChange(window(start) if has else None, (start, start * 2) if has and bump else None, None, LossPCA([[0, 0]], [0.5, 0.2]))

    def heads(m):
        planted = {"attn1": attn1_heads, "attn2": True, "smeared1": smeared1_heads, "smeared2": True}[m]
        return [InductionHead(Head(LAYERS[m] - 1, 0), 0.8, 0.5, 0.9)] if planted else []

    models = CFG.models
    text = TextAttribution([[1, 2, 3]], [-1.0, -0.1], [0.0, 0.0], 0, 0.6, [True, False], -1.0, -0.1, 1, p_value)
    res = {
        "trajectories": {m: trajectory(m, -3.0, previous_token) for m in models},
        "phase_change": {m: phase(m) for m in models},
        "heads": {m: heads(m) for m in models},
        "ablations": {m: Ablations(-3.0, {"pattern_preserving": [[-3.0, -3.1]] * LAYERS[m]}, -3.0 * (1 - drop), [0.1], drop)
                      for m in models},
        "mechanism": {"attn2": Mechanism(0.2, [], [HeadMechanism(Head(1, 0), Head(0, 0), 0.6, k_best, 0.2, ov, 0.8)])},
    }
    if attribution:
        res["attribution"] = Attribution("attn2", 10, 90, text, text)
    return res


def verdict(res, starts: str) -> Verdict:
    return claim_verdict(findings, CFG, res, starts)


CASES = [  # (claim, results where it holds, results where it does not)
    ("attn2 shows a phase change with induction heads after the first layer", {}, {"previous_token": 0.1}),
    ("attn2 shows a phase change with induction heads after the first layer", {}, {"window_share": 0.3}),
    ("more than 75% of attn2's final ICL score forms in the phase-change window", {}, {"window_share": 0.7}),
    ("attn2's held-out loss has a bump", {}, {"bump": False}),
    ("the 1-layer attention-only model forms no induction head", {}, {"attn1_heads": True}),
    ("the 1-layer attention-only model has no phase change", {}, {"attn1_window": True}),
    ("smeared keys give a 1-layer model induction heads", {}, {"smeared1_heads": False}),
    ("ablating attn2's induction heads (attention patterns preserved) removes most", {}, {"drop": 0.3}),
    ("attn2's induction heads' QK circuits K-compose with the previous-token head", {}, {"k_best": Head(0, 1)}),
    ("attn2's induction heads copy and prefix-match by their weights", {}, {"ov": -0.2}),
    ("across the phase change, the tokens an induction head can predict", {}, {"p_value": 0.2}),
]


@pytest.mark.parametrize("claim, holds, fails", CASES)
def test_each_claim_holds_on_one_case_and_not_on_the_other(claim, holds, fails):
    holds_and_fails(findings, CFG, results, claim, holds, fails)


def test_smeared_keys_must_move_the_window_earlier():
    assert verdict(results(), "smeared keys move the 2-layer phase change earlier") is Verdict.REPRODUCED
    later = results()
    later["phase_change"]["smeared2"] = later["phase_change"]["attn2"]  # same start: not earlier
    assert verdict(later, "smeared keys move the 2-layer phase change earlier") is Verdict.NOT_REPRODUCED


def test_no_window_anywhere_makes_the_attribution_claim_not_applicable():
    assert verdict(results(attribution=False), "across the phase change") is Verdict.NOT_APPLICABLE


def test_heads_are_written_in_their_one_text_form():
    claims, numbers = findings(CFG, results())
    assert numbers["induction_heads"]["attn2"][0].head == Head(1, 0)
    assert any("L1H0" in c.measured for c in claims if c.statement.startswith("attn2 shows"))
    assert not any("Head(" in c.statement + c.measured for c in claims)
