"""Phase-change analyses on synthetic training curves with known answers."""

import numpy as np
import pytest

from iclab.analysis.induction.phase_change import loss_bump, loss_pca, nonconvex_stretch, phase_change_window
from iclab.results import Head


def test_the_window_brackets_a_sigmoidal_drop_of_the_icl_score():
    tokens = np.geomspace(1e5, 1e9, 100)
    mid = 1e7
    icl = -0.4 / (1 + np.exp(-8 * (np.log(tokens) - np.log(mid))))  # falls from 0 to -0.4 around 1e7 tokens
    w = phase_change_window(tokens, icl, level=0.5)
    assert w.start_tokens < mid < w.end_tokens
    assert w.end_tokens / w.start_tokens < 10, "the window is narrow in log tokens"
    # a logistic's rate is >= half its peak where s(1-s) >= 1/8, i.e. s in [0.146, 0.854]: 70.7% of the change
    assert w.share_of_final == pytest.approx(np.sqrt(0.5), abs=0.03)
    default = phase_change_window(tokens, icl)  # the window the study uses: 90% of an ideal sigmoidal change inside
    assert default.share_of_final >= 0.89 and default.start_tokens < mid < default.end_tokens
    assert default.end_tokens / default.start_tokens < 100
    wide = phase_change_window(tokens, icl, level=0.25)  # s(1-s) >= 1/16: s in [0.067, 0.933], 86.6%
    assert wide.share_of_final == pytest.approx(np.sqrt(0.75), abs=0.03)


def test_no_window_without_improvement():
    tokens = np.geomspace(1e5, 1e9, 20)
    assert phase_change_window(tokens, np.linspace(0.0, 0.1, 20)) is None


def test_the_bump_is_the_rise_of_the_loss_curve():
    steps = np.arange(200)
    loss = 3 * np.exp(-steps / 40) + 1.0
    loss[100:120] += np.linspace(0, 0.3, 20)
    loss[120:140] += np.linspace(0.3, 0, 20)
    start, end = loss_bump(steps, loss)
    assert 95 <= start <= 110 and 115 <= end <= 130
    assert loss_bump(steps, 3 * np.exp(-steps / 40) + 1.0) is None


def test_pca_finds_the_turn_of_the_trajectory():
    t = np.linspace(0, 1, 50)
    # positions' losses move along direction a until t = 0.5, then along an orthogonal direction b
    a, b = np.zeros(30), np.zeros(30)
    a[:15], b[15:] = 1.0, 1.0
    losses = np.outer(np.minimum(t, 0.5), a) + np.outer(np.maximum(t - 0.5, 0), b)
    traj = loss_pca(losses)
    assert sum(traj.explained) == pytest.approx(1.0)
    d = np.diff(np.array(traj.coords), axis=0)
    cos = (d[10] @ d[40]) / np.linalg.norm(d[10]) / np.linalg.norm(d[40])
    assert abs(cos) < 0.2, "the two halves move in near-orthogonal directions: a sharp turn"


def test_a_power_law_is_convex_in_log_tokens_and_a_plateau_then_drop_is_not():
    tokens = np.geomspace(1e4, 1e8, 80)
    power_law = 2.0 + 3.0 * tokens**-0.2
    assert nonconvex_stretch(tokens, power_law) is None
    drop = power_law - 1.0 / (1 + np.exp(-6 * (np.log(tokens) - np.log(1e6))))  # a sudden extra 1-nat drop at 1e6 tokens
    stretch = nonconvex_stretch(tokens, drop)
    assert stretch is not None
    assert stretch[0] < 1e6 <= stretch[1]
    assert stretch[1] / stretch[0] < 30, "the stretch is the onset of the drop, not the whole curve"


def _trajectory(drop: float) -> tuple:
    """A scored trajectory over 40 snapshots whose ICL score falls by ``drop`` nats around 1e7 tokens: steps, tokens,
    ICL score, held-out loss, position losses."""
    rng = np.random.default_rng(0)
    tokens = np.concatenate([[0.0], np.geomspace(1e5, 1e9, 39)])
    icl = np.concatenate([[0.0], -drop / (1 + np.exp(-8 * (np.log(tokens[1:]) - np.log(1e7))))])
    return np.arange(40), tokens, icl, 3.0 - 0.1 * np.log10(tokens + 1), rng.normal(size=(40, 8))


def test_a_trajectory_has_a_phase_change_only_when_the_icl_score_moves_enough():
    from iclab.analysis.induction.phase_change import trajectory_phase_change

    big = trajectory_phase_change(*_trajectory(0.5), min_icl_change=0.2)
    assert big.window.start_tokens < 1e7 < big.window.end_tokens and len(big.pca.coords) == 40
    small = trajectory_phase_change(*_trajectory(0.1), min_icl_change=0.2)  # the fastest stretch of a 0.1-nat change
    assert small.window is None and small.bump_tokens is None and small.rise_tokens is None
    assert trajectory_phase_change(*_trajectory(0.1), min_icl_change=0.0).window is not None


def test_induction_heads_need_prefix_matching_and_copying():
    from iclab.analysis.induction.scores import induction_heads

    pm, cp, top1 = np.array([[0.1, 0.5], [0.9, 0.6]]), np.array([[0.2, 0.3], [0.8, 0.1]]), np.array([[0.9, 0.9], [0.8, 0.2]])
    heads = induction_heads(pm, cp, top1, threshold=0.4, min_copying_top1=0.5)
    assert [h.head for h in heads] == [Head(1, 0), Head(0, 1)]  # L1H1 matches prefixes but does not copy
    assert [h.head for h in induction_heads(pm, cp, top1, threshold=0.4, min_copying_top1=0.85)] == [Head(0, 1)]
