"""Per-token loss attribution across the phase change: known answers, the coloured text, and its place in the report."""

import numpy as np
import torch

from iclab.analysis.induction.loss_attribution import induction_predictable, phase_change_attribution


def test_the_phase_change_direction_singles_out_the_tokens_that_gain():
    rng = np.random.default_rng(0)
    S, N = 40, 30
    gainers = np.zeros(N, dtype=bool)
    gainers[::3] = True
    step = 1 / (1 + np.exp(-(np.arange(S) - 20) / 2))  # a logistic change between snapshots ~14 and ~26
    losses = 3.0 - 0.3 * np.linspace(0, 1, S)[:, None] + rng.normal(0, 0.02, (S, N))  # a slow drift for every token
    losses[:, gainers] -= 2.0 * step[:, None]  # the phase change: a third of the tokens drop by 2 nats
    attr = phase_change_attribution(losses, before=12, after=28)
    assert attr.delta[gainers].mean() < -1.5 and abs(attr.delta[~gainers].mean()) < 0.3
    assert attr.projection[gainers].mean() < 10 * abs(attr.projection[~gainers]).mean() * -1
    assert attr.explained > 0.5


def test_predictable_gain_tests_whether_predictable_tokens_gain_more():
    from iclab.analysis.induction.loss_attribution import predictable_gain

    rng = np.random.default_rng(1)
    predictable = np.arange(200) % 4 == 0
    delta = rng.normal(0, 0.1, 200) - 1.0 * predictable
    r = predictable_gain(delta, predictable)
    assert r["n_predictable"] == 50 and r["mean_delta_predictable"] < r["mean_delta_other"] - 0.8 and r["p_value"] < 1e-10
    assert predictable_gain(-delta, predictable)["p_value"] > 0.99  # the other way round: no evidence
    assert predictable_gain(delta, np.zeros(200, dtype=bool))["p_value"] is None


def test_induction_predictable_marks_tokens_whose_bigram_occurred_before():
    tokens = torch.tensor([[5, 6, 7, 5, 6, 8, 5, 6]])
    #  targets:             6  7  5  6  8  5  6
    # bigram seen before:   .  .  .  Y  .  .  Y   ((5, 6) at 0, again at 3 and 6; (6, 8) is new)
    assert induction_predictable(tokens).tolist() == [[False, False, False, True, False, False, True]]


def test_the_coloured_text_is_written_and_embedded_in_the_report(tmp_path):
    import json

    from iclab.analysis.induction.runs import Attribution, TextAttribution
    from iclab.plots.induction import token_loss_attribution
    from iclab.report import build_report
    from iclab.studies.common import RunIdentity, Summary

    text = TextAttribution([[ord(c) for c in "a<b>\nab"]], [0.1, -0.5, 0.2, -1.0, 0.0, -2.0], [0.0] * 6, 0, 0.5,
                           [False] * 5 + [True], -2.0, -0.24, 1, None)
    attr = Attribution("attn2", 10, 90, text, text)
    study = tmp_path / "induction"
    path = token_loss_attribution({"attribution": attr}, study / "figures")
    text = path.read_text()
    assert "&gt;</span>" in text and "&lt;</span>" in text and "rgba(0,150,60,1.00)" in text and "underline" in text
    Summary("induction", "quick", RunIdentity("0", "0", "test"), {}, [], [], ["figures/token_loss_attribution.html"], {}, []).write(study)
    (tmp_path / "reproduce.json").write_text(json.dumps({"preset": "quick", "studies": {"induction": {"status": "done", "out": str(study)}}}))
    report = build_report(tmp_path).read_text()
    assert 'class="attribution"' in report and "&lt;</span>" in report
