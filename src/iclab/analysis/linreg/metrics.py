"""Comparing learners: SPD, ILWD, MSPD (Akyürek et al. 2023, section 4), with bootstrap intervals.

SPD(A1, A2)_i = E_prompts (A1(D_i)(x_i) - A2(D_i)(x_i))^2 / d, D_i = first i pairs.
ILWD(A1, A2)_i = E_prompts ||w_hat_A1 - w_hat_A2||^2 / d, where w_hat_A is the
least-squares fit of A(D_i)'s predictions on fresh probe inputs x'_j (the
"implicit linear weights"; linear learners' fits equal their own w).
MSPD = SPD averaged over the under-determined prefixes 1 <= i < d.
All functions are pure: predictions in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iclab.analysis.stats import bootstrap_mean


@dataclass(frozen=True)
class CurveCI:
    """A metric as a function of the number of in-context examples i, with a 95% bootstrap interval."""

    mean: list[float]  # [n]
    low: list[float]
    high: list[float]

    def average(self, start: int = 1) -> float:
        """The curve's mean over i >= ``start`` (the study's summary: n >= 1)."""
        return float(np.mean(self.mean[start:]))


def _bootstrap(per_prompt: torch.Tensor, generator: torch.Generator) -> CurveCI:
    """per_prompt [B, n] -> mean over prompts and its 95% bootstrap interval (:func:`iclab.analysis.stats.bootstrap_mean`)."""
    mean, low, high = bootstrap_mean(per_prompt, generator)
    return CurveCI(per_prompt.mean(0).tolist(), low.tolist(), high.tolist())


def spd_per_prompt(preds1: torch.Tensor, preds2: torch.Tensor, d: int) -> torch.Tensor:
    """Squared prediction difference per prompt and prefix, / d: [B, n]."""
    return (preds1.to(torch.float64) - preds2.to(torch.float64)).pow(2) / d


def spd(preds1: torch.Tensor, preds2: torch.Tensor, d: int, generator: torch.Generator) -> CurveCI:
    """SPD against the number of in-context examples; preds [B, n]."""
    return _bootstrap(spd_per_prompt(preds1, preds2, d), generator)


def implicit_weights(query_preds: torch.Tensor, queries: torch.Tensor, intercept: bool = False) -> torch.Tensor:
    """Least-squares w_hat with w_hat . x'_q (+ c) ~ prediction: query_preds [B, n, Q], queries [B, Q, d] -> [B, n, d].

    ``intercept``: fit a constant c as well and return only w_hat (the authors' plotting code fits
    with an intercept); without it the fit goes through the origin."""
    Xq = queries.to(torch.float64)
    if intercept:
        Xq = torch.cat([Xq, torch.ones(*Xq.shape[:-1], 1, dtype=torch.float64, device=Xq.device)], dim=-1)
    pinv = torch.linalg.pinv(Xq)  # [B, d (+1), Q]
    w = torch.einsum("bdq,bnq->bnd", pinv, query_preds.to(torch.float64))
    return w[..., : queries.shape[-1]]


def implicit_weight_stability(learner, xs: torch.Tensor, ys: torch.Tensor, generator: torch.Generator,
                              multiples: tuple[int, ...] = (1, 2, 4, 8, 16, 32), reference: int = 64,
                              intercept: bool = False) -> dict[int, float]:
    """How much a learner's implicit weights move with the number of probe inputs: for each Q = m d,
    E ||w_hat(Q) - w_hat(reference d)||^2 / E ||w_hat(reference d)||^2 over prompts and prefixes n >= 1.
    Linear learners give 0 at every Q >= d; a non-linear one (kNN) needs enough probes to settle."""
    B, _, d = xs.shape
    pool = torch.randn(B, reference * d, d, generator=generator)
    ref = implicit_weights(learner.predict_queries(xs, ys, pool), pool, intercept)[:, 1:]
    scale = float(ref.pow(2).sum(-1).mean())
    out = {}
    for m in multiples:
        q = pool[:, : m * d]
        w = implicit_weights(learner.predict_queries(xs, ys, q), q, intercept)[:, 1:]
        out[m] = float((w - ref).pow(2).sum(-1).mean()) / scale
    return out


def ilwd(weights1: torch.Tensor, weights2: torch.Tensor, generator: torch.Generator) -> CurveCI:
    """ILWD against the number of in-context examples; implicit weights [B, n, d]."""
    d = weights1.shape[-1]
    per = (weights1.to(torch.float64) - weights2.to(torch.float64)).pow(2).sum(-1) / d
    return _bootstrap(per, generator)


def mspd(preds1: torch.Tensor, preds2: torch.Tensor, d: int) -> float:
    """SPD averaged over the under-determined prefixes 1 <= i < d."""
    return float(spd_per_prompt(preds1, preds2, d)[:, 1:d].mean())


def normalized_error(preds: torch.Tensor, ys: torch.Tensor, d: int) -> list[float]:
    """Squared error / d against the number of in-context examples (1.0 = predicting zero for tau = 1)."""
    return ((preds.to(torch.float64) - ys.to(torch.float64)).pow(2).mean(0) / d).tolist()


def best_step_size(make, grid: list[float], xs: torch.Tensor, ys: torch.Tensor, d: int,
                   target: torch.Tensor | None = None) -> tuple[float, list[float]]:
    """The step size of ``grid`` whose learner ``make(lr)`` is closest to ``target`` predictions [B, n] (mean SPD over
    every prefix but the first), or, with no target, has the lowest error on ``ys``; returns (best, score per step)."""
    goal = ys if target is None else target
    scores = [float(spd_per_prompt(make(lr).predict(xs, ys), goal, d)[:, 1:].mean()) for lr in grid]
    return grid[min(range(len(grid)), key=scores.__getitem__)], scores
