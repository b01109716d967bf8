"""Phase-change analyses on synthetic training curves with known answers."""

import numpy as np
import pytest

from iclab.analysis.phase_change import loss_bump, loss_pca, nonconvex_stretch, phase_change_window


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
    assert traj.explained.sum() == pytest.approx(1.0)
    d = np.diff(traj.coords, axis=0)
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
