"""Per-token loss attribution across the phase change (Olsson et al. 2022, the per-token loss analysis).

Given each token's loss at every snapshot of training, ``losses`` [S, N] (S
snapshots, N tokens of one fixed text sample), the PCA of the snapshots'
loss vectors gives the training trajectory; the *phase-change direction* is
the principal direction whose coordinate moves most between the snapshot
before the phase-change window and the one after it. Each token's share of
that move is its loading on the direction times the move, and its plain
loss change is losses[after] - losses[before]. Tokens an induction head can
predict (their preceding token, followed by them, occurred earlier in the
sequence) are the ones the paper finds gaining. Pure functions: tensors in,
arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iclab.analysis.stats import pca


@dataclass
class Attribution:
    delta: np.ndarray  # [N] loss after - loss before (negative: the token got easier)
    projection: np.ndarray  # [N] each token's contribution to the move along the phase-change direction (same sign as delta)
    component: int  # which principal direction (0-based)
    explained: float  # share of the loss variance over snapshots along it


def phase_change_attribution(losses: np.ndarray, before: int, after: int) -> Attribution:
    """``losses`` [S, N] per-token losses at S snapshots; ``before`` / ``after``: snapshot indices around the window."""
    losses = np.asarray(losses, dtype=np.float64)
    p = pca(losses)
    move = p.coords[after] - p.coords[before]  # [r]
    k = int(np.argmax(np.abs(move)))
    return Attribution(delta=losses[after] - losses[before], projection=p.components[k] * move[k], component=k,
                       explained=float(p.explained[k]))


def induction_predictable(tokens: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B, T-1] bool: target token t+1 follows token t somewhere earlier in the sequence (the bigram
    (tokens[t], tokens[t+1]) occurred at an earlier position), so copying what followed the earlier occurrence predicts it."""
    B, T = tokens.shape
    out = torch.zeros(B, T - 1, dtype=torch.bool)
    for b in range(B):
        seen: set[tuple[int, int]] = set()
        row = tokens[b].tolist()
        for t in range(T - 1):
            pair = (row[t], row[t + 1])
            out[b, t] = pair in seen
            seen.add(pair)
    return out


def predictable_gain(delta: np.ndarray, predictable: np.ndarray) -> dict[str, float | int | None]:
    """Mean loss change of induction-predictable tokens and of the rest, and the one-sided Welch test that the
    predictable ones gain more (their change is lower). delta [N], predictable [N] bool."""
    from scipy.stats import ttest_ind

    pred, rest = delta[predictable], delta[~predictable]
    test = ttest_ind(pred, rest, equal_var=False, alternative="less") if len(pred) > 1 and len(rest) > 1 else None
    return {"mean_delta_predictable": float(pred.mean()) if len(pred) else None,
            "mean_delta_other": float(rest.mean()) if len(rest) else None, "n_predictable": int(predictable.sum()),
            "p_value": None if test is None else float(test.pvalue)}
