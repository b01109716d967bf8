"""Training-dynamics analyses of Olsson et al. (2022): per-token-loss PCA, phase-change window, loss bump.

Inputs are plain arrays over S snapshots: tokens seen [S], ICL scores [S],
per-token losses [S, K] (the losses of K fixed token positions), training
losses [S]. All functions are pure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iclab.analysis.stats import moving_average, pca


@dataclass(frozen=True)
class LossPCA:
    """The training trajectory in the per-token-loss PCA: ``coords`` [S][2], the snapshots in the first two principal
    components, and the share of variance each ``explained`` [2]."""

    coords: list[list[float]]
    explained: list[float]


def loss_pca(token_losses: np.ndarray) -> LossPCA:
    """PCA of the snapshots x positions loss matrix [S, K]: the training trajectory in 2-D."""
    p = pca(token_losses)
    return LossPCA(coords=p.coords[:, :2].tolist(), explained=p.explained[:2].tolist())


@dataclass(frozen=True)
class Window:
    start_tokens: float
    end_tokens: float
    share_of_final: float  # fraction of the final ICL score's change that happens inside the window


# The rate level that bounds the window: an ideal logistic change in log tokens, s(x), has rate s(1 - s), peak 1/4;
# s(1 - s) >= 0.19 / 4 holds exactly for s in [0.05, 0.95], so the window holds 90% of such a change. (Half the
# peak, 0.5, holds only 70.7%, which left "more than 75% forms in the window" above what a perfect step can show.)
WINDOW_LEVEL = 0.19


def phase_change_window(tokens: np.ndarray, icl: np.ndarray, level: float = WINDOW_LEVEL) -> Window | None:
    """Where the ICL score changes fastest (per log training token), widened while the rate stays above
    ``level`` times its peak (default: 90% of an ideal logistic change inside). None if the score never improves.

    tokens [S] increasing, icl [S] (negative = context helps, so improvement is a decrease).
    """
    t = np.log(np.asarray(tokens, dtype=np.float64))
    y = np.asarray(icl, dtype=np.float64)
    if len(y) < 3 or y[-1] >= y[0]:
        return None
    rate = -np.diff(y) / np.diff(t)  # [S-1] improvement per log token
    peak = int(np.argmax(rate))
    if rate[peak] <= 0:
        return None
    lo = hi = peak
    while lo > 0 and rate[lo - 1] >= level * rate[peak]:
        lo -= 1
    while hi < len(rate) - 1 and rate[hi + 1] >= level * rate[peak]:
        hi += 1
    # the window's ends: where the rate (taken at each interval's midpoint, linear between) crosses the level
    mid, thr = (t[:-1] + t[1:]) / 2, level * rate[peak]
    left = t[0] if lo == 0 else np.interp(thr, [rate[lo - 1], rate[lo]], [mid[lo - 1], mid[lo]])
    right = t[-1] if hi == len(rate) - 1 else np.interp(-thr, [-rate[hi], -rate[hi + 1]], [mid[hi], mid[hi + 1]])
    inside = np.interp(left, t, y) - np.interp(right, t, y)
    total = y[0] - y[-1]
    return Window(start_tokens=float(np.exp(left)), end_tokens=float(np.exp(right)), share_of_final=float(inside / total))


def loss_bump(steps: np.ndarray, losses: np.ndarray, smooth: int = 5, min_rise: float = 0.0) -> tuple[float, float] | None:
    """The step range where the (moving-average) training loss rises, the largest such rise; None if it never rises.

    Olsson et al.: the phase change shows as a small bump, the only non-convex part of the loss curve.
    """
    x = np.asarray(losses, dtype=np.float64)
    if len(x) < smooth + 2:
        return None
    sm = moving_average(x, smooth)
    s = np.asarray(steps)[smooth - 1 :]
    best, best_rise = None, min_rise
    i = 0
    while i < len(sm) - 1:
        if sm[i + 1] > sm[i]:
            j = i
            while j < len(sm) - 1 and sm[j + 1] > sm[j]:
                j += 1
            if sm[j] - sm[i] > best_rise:
                best, best_rise = (float(s[i]), float(s[j])), sm[j] - sm[i]
            i = j
        i += 1
    return best


def nonconvex_stretch(tokens: np.ndarray, losses: np.ndarray, min_drop: float = 0.02) -> tuple[float, float] | None:
    """The token range where the loss, as a function of log tokens, is concave (its decrease accelerates),
    the stretch with the largest accumulated slope change; None if the curve is convex up to ``min_drop`` nats.

    A loss that follows a power law or any steady decay is convex in log tokens; a plateau followed by a sudden
    drop is not. Olsson et al.'s bump is this non-convex part. tokens [S] increasing and > 0, losses [S].
    """
    t = np.log(np.asarray(tokens, dtype=np.float64))
    y = np.asarray(losses, dtype=np.float64)
    if len(y) < 4:
        return None
    slope = np.diff(y) / np.diff(t)  # [S-1]
    # slope decreasing = concave; measure it as the extra drop over the stretch beyond a straight continuation
    bend = np.diff(slope)  # [S-2], < 0 where the decrease accelerates
    best, best_gain = None, 0.0
    i = 0
    while i < len(bend):
        if bend[i] < 0:
            j = i
            while j + 1 < len(bend) and bend[j + 1] < 0:
                j += 1
            # loss actually reached at the stretch's end vs continuing the slope it started with
            gain = (y[i + 1] + slope[i] * (t[j + 2] - t[i + 1])) - y[j + 2]
            if gain > best_gain:
                best, best_gain = (float(tokens[i]), float(tokens[j + 2])), gain
            i = j
        i += 1
    return best if best_gain >= min_drop else None


# ----------------------------------------------------------------------------- a scored training trajectory


def smooth(y: np.ndarray, width: int = 5) -> np.ndarray:
    """Centred moving average (edges averaged over what exists): snapshot-to-snapshot noise of a scored curve."""
    return moving_average(y, width, edges="shrink")


@dataclass(frozen=True)
class PhaseChange:
    """A trajectory's phase-change ``window`` (None: no phase change), the held-out loss's bump (a non-convex stretch
    against log tokens) and outright rise near it, as (start, end) tokens, and the per-token-loss PCA trajectory."""

    window: Window | None
    bump_tokens: tuple[float, float] | None
    rise_tokens: tuple[float, float] | None
    pca: LossPCA


def trajectory_phase_change(steps: np.ndarray, tokens: np.ndarray, icl: np.ndarray, held_out_loss: np.ndarray,
                            position_losses: np.ndarray, level: float = WINDOW_LEVEL, min_icl_change: float = 0.0) -> PhaseChange:
    """Phase-change window of a scored trajectory's (smoothed) ICL score, the loss bump near it, and the
    per-token-loss PCA trajectory. Over S snapshots: ``steps`` [S], ``tokens`` [S] seen, the ICL score ``icl`` [S] and
    the loss ``held_out_loss`` [S] on fixed held-out sequences, and ``position_losses`` [S, K] of K fixed positions.
    A fastest-change window counts as a phase change only if the ICL score improves by ``min_icl_change`` nats
    inside it (a model that improves gradually, or not at all, still has a fastest stretch); otherwise the window,
    bump and rise are None."""
    steps, icl_all = np.asarray(steps), np.asarray(icl, dtype=np.float64)
    keep = steps > 0  # log-token axis: the initial weights have seen no tokens
    tokens = np.asarray(tokens)[keep]
    window = phase_change_window(tokens, smooth(icl_all[keep]), level)
    total = icl_all[-1] - icl_all[0]  # negative when the model learns in context
    if window is not None and -total * window.share_of_final < min_icl_change:
        window = None
    # the bump is looked for in the held-out loss at the snapshots (the same fixed sequences every time, so any
    # feature is the model's, not a batch's), from a decade before the window on (the paper's bump co-occurs with
    # the phase change; earlier, the loss's first fall from its initial value is non-convex too): the largest
    # non-convex stretch against log tokens, and any outright rise
    bump = rise = None
    if window is not None:
        near = tokens >= window.start_tokens / 10
        held_out = np.asarray(held_out_loss)[keep][near]
        bump = nonconvex_stretch(tokens[near], held_out)
        rise = loss_bump(tokens[near], held_out, smooth=3, min_rise=0.01)
    return PhaseChange(window, bump, rise, loss_pca(np.asarray(position_losses)))
