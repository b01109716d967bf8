"""The addk study's claims, table-driven on hand-built typed results: for each claim a case where it holds and one where
it does not (and NOT APPLICABLE where the model has no behaviour or no main head)."""

from dataclasses import replace

import pytest
from claim_cases import holds_and_fails
from claim_cases import verdict as claim_verdict

from iclab.analysis.addk import FeatureFit, HeadTest, MainHeadRule, MeanCI, SignalRouting, WrongDemonstration
from iclab.analysis.addk.pipeline import (
    CleanAccuracy,
    HeadProjection,
    HeadSetAccuracy,
    HeadSubspace,
    JointFit,
    Localisation,
    Projection,
    SelfCorrection,
    Subspaces,
)
from iclab.analysis.addk import TaskVectorCurve
from iclab.claims import Verdict
from iclab.results import Head
from iclab.studies.addk.claims import findings
from iclab.studies.addk.settings import PRESETS

CFG = PRESETS["quick"]
MAIN = Head(1, 2)
CI = MeanCI(0.5, (0.4, 0.6), 20)


def subspace(label_share: float = 0.97, successive: float = -0.3) -> HeadSubspace:
    return HeadSubspace(
        explained=[0.5, 0.3, 0.2], pcs_to_95=3, coords=[[0.0, 0.0, 0.0]] * 3,
        periodic={"PC1": {"mod10c": FeatureFit(0.9, 0.0)}}, mod_fit=JointFit({"mod10c": 0.9}, {"mod10c": 0.9}, {"mod10c": 0.0}),
        identity_relative_error=1e-6, attention_label_share=0.9, signal_label_share=label_share, position_attention=[0.5, 0.5],
        position_signal=[0.5, 0.5], successive_signal_correlation=successive, signal_norm_by_demo=[1.0, 1.0],
        signal_routing=SignalRouting(3.0, CI, CI, CI, CI, CI, CI), wrong_first_demo=WrongDemonstration(0.9, -0.5, 0.2, 0.1, 0.9, 0.8))


def results(selected_fv=0.9, zero_shot=0.1, selected=(Head(0, 1), MAIN, Head(2, 3)), main=(MAIN,), main_ablated=0.2,
            random_ablated=(0.85, 0.9, 0.88), label_share=0.97, successive=-0.3, first_wrong=0.8, last_wrong=0.7, clean=0.9):
    selected, main = list(selected), list(main)
    accuracy = HeadSetAccuracy(zero_shot, selected_fv, 0.8, 0.7 if main else None, 0.9, main_ablated if main else None,
                               list(random_ablated) if main else [])
    loc = Localisation(1, [[0.0] * 4 for _ in range(3)], [1.0], selected, main, {h: HeadTest(0.01, 3, 10, 1, h in main) for h in selected},
                       {h: {0: 0.1, 3: 0.6} for h in selected}, main, MainHeadRule(main, {h: 0.5 for h in selected}, 0.5, True), accuracy)
    heads = main or selected
    return {"model": "hand-built", "clean_accuracy": CleanAccuracy(clean, 0.5), "localisation": loc,
            "subspaces": Subspaces({h: subspace(label_share, successive) for h in heads}),
            "self_correction": SelfCorrection(0.9, first_wrong, last_wrong),
            "projection": Projection({h: HeadProjection(3.0, {"whole": 0.6}) for h in heads})}


def verdict(res, starts: str) -> Verdict:
    return claim_verdict(findings, CFG, res, starts)


CASES = [  # (claim, results where it holds, results where it does not)
    ("a sparse set of heads carries the task", {}, {"selected_fv": 0.2}),
    ("a sparse set of heads carries the task", {}, {"selected": [Head(0, h) for h in range(4)]}),  # 4 of 12 > a quarter
    ("the main heads are necessary", {}, {"main_ablated": 0.8}),  # drop 0.1 < 0.2
    ("the main heads are necessary", {}, {"random_ablated": (0.5, 0.5, 0.5)}),  # random sets cost more than half as much
    ("the main heads take their signal from the demonstrations' label tokens", {}, {"label_share": 0.5}),
    ("self-correction", {}, {"successive": 0.2}),
    ("self-correction", {}, {"first_wrong": 0.5, "last_wrong": 0.8}),
]


@pytest.mark.parametrize("claim, holds, fails", CASES)
def test_each_claim_holds_on_one_case_and_not_on_the_other(claim, holds, fails):
    holds_and_fails(findings, CFG, results, claim, holds, fails)


def test_no_main_head_makes_necessity_not_applicable():
    assert verdict(results(main=()), "the main heads are necessary") is Verdict.NOT_APPLICABLE


def test_a_model_without_the_behaviour_gets_not_applicable_for_every_localisation_claim():
    res = {"model": "hand-built", "clean_accuracy": CleanAccuracy(0.1, 0.0)}
    claims, numbers = findings(CFG, res)
    localisation = [c for c in claims if c.verdict is Verdict.NOT_APPLICABLE]
    assert len(localisation) == 5 and all(c.thresholds == {"min_clean_accuracy": CFG.min_clean_accuracy} for c in localisation)
    assert numbers["localised"] is False
    assert not any("task vectors by layer" in c.statement for c in claims)
    # a weak model trained here still reports its task-vector curve (how a recipe is judged)
    curve = TaskVectorCurve([0, 1, 2], [0.0, 0.01, 0.02], [0.0, 0.0, 0.0], 0.01, 0.1)
    claims, _ = findings(CFG, {**res, "task_vectors": curve})
    tv = [c for c in claims if "task vectors by layer" in c.statement]
    assert len(tv) == 1 and tv[0].verdict is Verdict.MEASURED and "L2 0.02 (0.00)" in tv[0].measured


def test_the_head_claims_are_one_each_over_the_heads_named_alike_at_every_seed():
    """Which heads a seed selects varies; a claim is matched across seeds by its statement, so no statement names a
    head, none repeats, and each verdict holds only when it holds for every analysed head."""
    two = results(main=(MAIN, Head(2, 3)))
    claims, _ = findings(CFG, two)
    statements = [c.statement for c in claims]
    assert len(statements) == len(set(statements)) and not any(str(MAIN) in s for s in statements)
    other, _ = findings(CFG, results(main=(Head(0, 1),)))
    assert [c.statement for c in other] == statements
    one_weak = {**two, "subspaces": Subspaces({MAIN: subspace(), Head(2, 3): subspace(label_share=0.5)})}
    assert verdict(one_weak, "the main heads take their signal") is Verdict.NOT_REPRODUCED
    label = next(c for c in findings(CFG, one_weak)[0] if c.statement.startswith("the main heads take their signal"))
    assert label.values["least_label_signal_share"] == 0.5 and "head L2H3: 50%" in label.measured


def test_below_the_bar_the_localisation_claims_keep_their_statements():
    made = {c.statement for c in findings(CFG, results())[0]}
    below = findings(CFG, {"model": "hand-built", "clean_accuracy": CleanAccuracy(0.1, 0.0)})[0]
    assert {c.statement for c in below if c.verdict is Verdict.NOT_APPLICABLE} <= made


def test_the_thresholds_decide_and_are_named():
    strict = replace(CFG, thresholds=replace(CFG.thresholds, min_label_share=0.99))
    claims, _ = findings(strict, results())
    label = next(c for c in claims if "label tokens" in c.statement)
    assert label.verdict is Verdict.NOT_REPRODUCED and label.thresholds == {"thresholds.min_label_share": 0.99}


def test_heads_appear_in_their_one_text_form():
    claims, numbers = findings(CFG, results())
    text = " ".join(c.statement + " " + c.measured for c in claims)
    assert f"main 1 ({MAIN})" in text and f"head {MAIN}: 97% of its extracted signal" in text and "Head(" not in text
    assert numbers["heads"]["main"] == [MAIN]


def test_the_task_vector_curve_is_reported_layer_by_layer_with_its_peak():
    claims, _ = findings(CFG, {**results(), "task_vectors": TaskVectorCurve([0, 1, 2], [0.02, 0.4, 0.9], [0.0, 0.3, 0.8], 0.03, 0.95)})
    tv = next(c for c in claims if c.statement.startswith("task vectors by layer"))
    assert tv.verdict == Verdict.MEASURED and "L2 0.90 (0.80)" in tv.measured and "peak at L2" in tv.measured
    assert tv.values["task_vector_best_accuracy"] == 0.9 and tv.values["task_vector_best_layer"] == 2
    assert not any(c.statement.startswith("task vectors by layer") for c in findings(CFG, results())[0])  # not run: no line


def test_the_clean_scan_claim_is_one_statement_at_every_seed():
    # claims are judged over seeds by their statement: what a seed measures (here the answers' length in tokens, which
    # differs between seeds' prompts) belongs in the words, or the seeds' claims would not meet (two INCONCLUSIVE lines)
    from iclab.analysis.addk.pipeline import CleanScan, FormatAccuracy
    from iclab.claims import judge_over_seeds
    from iclab.studies.addk.claims import scan_findings

    def scan(tokens, accuracy):
        return CleanScan({"arrow/5": FormatAccuracy("arrow", 5, accuracy, {1: accuracy}, tokens)})

    at = {0: scan_findings(CFG, scan(2.1, 0.15)), 1: scan_findings(CFG, scan(2.0, 0.12))}
    assert at[0][0].statement == at[1][0].statement and "2.1 tokens" in at[0][0].measured
    (claim,) = judge_over_seeds(at)
    assert claim.verdict is Verdict.MEASURED and [a.verdict for a in claim.per_seed] == [Verdict.MEASURED] * 2
