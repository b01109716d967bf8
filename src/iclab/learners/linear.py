"""Linear reference learners: OLS, ridge, Bayes, gradient descent, SGD, averaging.

Shapes: xs [B, n, d], ys [B, n]. Every learner answers ``predict(xs, ys)`` ->
preds [B, n], where preds[:, i] is the prediction for x_i from the first i
pairs only (preds[:, 0] uses no data). Linear learners expose the weights they
use, ``weights(xs, ys)`` -> [B, n, d] (w[:, i] fitted on pairs 0..i-1), so
their implicit weights are exact. All are vectorised over prompts and prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _exclusive_cumsum(t: torch.Tensor) -> torch.Tensor:
    """Along dim 1: out[:, i] = sum_(j<i) t[:, j]."""
    return torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1].cumsum(1)], dim=1)


def prefix_xty(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sums b_i = sum_(j<i) y_j x_j: [B, n, d]."""
    return _exclusive_cumsum(ys.unsqueeze(-1) * xs)


def prefix_moments(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exclusive prefix sums A_i = sum_(j<i) x_j x_j^T [B, n, d, d] and b_i = sum_(j<i) y_j x_j [B, n, d]."""
    return _exclusive_cumsum(xs.unsqueeze(-1) * xs.unsqueeze(-2)), prefix_xty(xs, ys)


def _recursive_least_squares(xs: torch.Tensor, ys: torch.Tensor, P: torch.Tensor, w: torch.Tensor, first: int, out: torch.Tensor) -> torch.Tensor:
    """Fill out[:, first:] by Sherman-Morrison updates from P = (A_first)^-1, w = w_first (float64).

    After each pair (x, y): P <- P - P x x^T P / (1 + x^T P x), w <- w + P x (y - x . w).
    """
    B = xs.shape[0]
    for i in range(first, xs.shape[1]):
        out[:, i] = w
        x = xs[:, i]
        Px = torch.einsum("bij,bj->bi", P, x)
        P = P - Px.unsqueeze(-1) * Px.unsqueeze(-2) / (1 + (x * Px).sum(-1)).view(B, 1, 1)
        w = w + torch.einsum("bij,bj->bi", P, x) * (ys[:, i] - (x * w).sum(-1)).unsqueeze(-1)
    return out


class LinearLearner:
    name = "linear"

    def weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """preds [B, n]: x_i . w_i with w_i from the first i pairs."""
        return torch.einsum("bnd,bnd->bn", self.weights(xs, ys), xs.to(torch.float64)).to(xs.dtype)

    def predict_queries(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Predictions for probe inputs queries [B, Q, d] from every prefix: [B, n, Q]."""
        return torch.einsum("bnd,bqd->bnq", self.weights(xs, ys), queries.to(torch.float64)).to(xs.dtype)


def ridge_weights(xs: torch.Tensor, ys: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge weights for every prefix by Sherman-Morrison updates, O(B n d^2).

    With P_0 = I / lam, after each pair (x, y):
      P <- P - P x x^T P / (1 + x^T P x),   w <- w + P x (y - x . w)
    so P_i = (X_i^T X_i + lam I)^-1 and w_i = P_i X_i^T y_i (Akyürek et al. 2023, eq. for ridge).
    Returns [B, n, d] in float64; requires lam > 0.
    """
    if lam <= 0:
        raise ValueError(f"ridge needs lam > 0 (use OLS for lam = 0), got {lam}")
    xs, ys = xs.to(torch.float64), ys.to(torch.float64)
    B, n, d = xs.shape
    P = torch.eye(d, dtype=torch.float64).expand(B, d, d) / lam
    w = torch.zeros(B, d, dtype=torch.float64)
    return _recursive_least_squares(xs, ys, P, w, 0, torch.empty(B, n, d, dtype=torch.float64))


def ols_weights(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least-squares weights for every prefix, [B, n, d] (float64).

    Prefix i <= d: w = X^T (X X^T)^-1 y (the dual form, exact minimum norm when the
    i inputs are linearly independent, which holds with probability one for
    continuous inputs); i = d + 1: w = (X^T X)^-1 X^T y; beyond, recursive least
    squares (Sherman-Morrison) from there. A singular system falls back to the
    pseudo-inverse.
    """
    xs, ys = xs.to(torch.float64), ys.to(torch.float64)
    B, n, d = xs.shape
    out = torch.zeros(B, n, d, dtype=torch.float64)
    for i in range(1, min(n, d + 1)):
        X, y = xs[:, :i], ys[:, :i]
        gram = X @ X.transpose(1, 2)  # [B, i, i]
        alpha, info = torch.linalg.solve_ex(gram, y.unsqueeze(-1))
        if bool((info != 0).any()):
            alpha = torch.linalg.pinv(gram) @ y.unsqueeze(-1)
        out[:, i] = (X.transpose(1, 2) @ alpha).squeeze(-1)
    if n > d + 1:
        X, y = xs[:, : d + 1], ys[:, : d + 1]
        A = X.transpose(1, 2) @ X  # [B, d, d]
        L, info = torch.linalg.cholesky_ex(A)
        P = torch.linalg.pinv(A) if bool((info != 0).any()) else torch.cholesky_inverse(L)
        w = (P @ (X.transpose(1, 2) @ y.unsqueeze(-1))).squeeze(-1)
        _recursive_least_squares(xs, ys, P, w, d + 1, out)
    return out


@dataclass(frozen=True)
class OLS(LinearLearner):
    """Ordinary least squares, minimum-norm (pseudo-inverse) when fewer than d pairs."""

    name = "ols"

    def weights(self, xs, ys):
        return ols_weights(xs, ys)


@dataclass(frozen=True)
class Ridge(LinearLearner):
    """Ridge regression, (X^T X + lam I)^-1 X^T y."""

    lam: float = 0.1
    name = "ridge"

    def weights(self, xs, ys):
        return ridge_weights(xs, ys, self.lam)


@dataclass(frozen=True)
class Bayes(LinearLearner):
    """Posterior mean for w ~ N(0, tau^2 I), noise N(0, sigma^2): ridge with lam = sigma^2 / tau^2 (OLS if sigma = 0)."""

    sigma: float = 0.0
    tau: float = 1.0
    name = "bayes"

    def weights(self, xs, ys):
        lam = self.sigma**2 / self.tau**2
        return ols_weights(xs, ys) if lam == 0 else ridge_weights(xs, ys, lam)


@dataclass(frozen=True)
class GD(LinearLearner):
    """Batch gradient descent from w0 = 0 on sum_j (x_j . w - y_j)^2 + lam ||w||^2:
    w <- w - 2 lr (X^T X w - X^T y + lam w), ``steps`` times (Akyürek et al. 2023)."""

    steps: int = 1
    lr: float = 0.01
    lam: float = 0.0
    name = "gd"

    def weights(self, xs, ys):
        xs, ys = xs.to(torch.float64), ys.to(torch.float64)
        b = prefix_xty(xs, ys)
        w = 2 * self.lr * b  # the first step from w0 = 0 needs no X^T X
        if self.steps > 1:
            A, _ = prefix_moments(xs, ys)
            for _ in range(self.steps - 1):
                w = w - 2 * self.lr * (torch.einsum("bnij,bnj->bni", A, w) - b + self.lam * w)
        return w


@dataclass(frozen=True)
class SGD(LinearLearner):
    """One pass of SGD over the pairs in order, batch size 1, from w0 = 0:
    w <- w - 2 lr (x_j . w - y_j) x_j; prediction i uses w after i updates."""

    lr: float = 0.02
    name = "sgd"

    def weights(self, xs, ys):
        xs, ys = xs.to(torch.float64), ys.to(torch.float64)
        B, n, d = xs.shape
        w = torch.zeros(B, d, dtype=torch.float64)
        out = torch.empty(B, n, d, dtype=torch.float64)
        for i in range(n):
            out[:, i] = w
            w = w - 2 * self.lr * ((xs[:, i] * w).sum(-1) - ys[:, i]).unsqueeze(-1) * xs[:, i]
        return out


@dataclass(frozen=True)
class Averaging(LinearLearner):
    """w_hat = mean_(j<i) y_j x_j (Akyürek et al.'s averaging baseline)."""

    name = "averaging"

    def weights(self, xs, ys):
        b = prefix_xty(xs.to(torch.float64), ys.to(torch.float64))
        counts = torch.arange(xs.shape[1], dtype=torch.float64).clamp(min=1).view(1, -1, 1)
        return b / counts


@dataclass(frozen=True)
class PriorMean(LinearLearner):
    """w_hat = 0 at every prefix: the prior's mean, the best prediction that ignores the context (the Bayes
    predictor before any example; Hoogland et al. 2024's first stage of a linear-regression transformer)."""

    name = "prior_mean"

    def weights(self, xs, ys):
        return torch.zeros(xs.shape, dtype=torch.float64, device=xs.device)

