"""The Boltzmann measure P(W) ~ exp(-beta H(W)): exact, message passing, Langevin.

H is quadratic, so the measure is Gaussian with mean A^-1 h (the ridge
solution, for every beta) and covariance (beta A)^-1, A = lambda0 I - J.
:func:`exact_measure` is the reference; :func:`amp` is cavity / approximate
message passing, vectorised, with the Onsager term that makes its fixed point
the exact mean, and :func:`amp_paper` the paper's update without it; :func:`langevin` samples any
differentiable H and is checked against the exact Gaussian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iclab.spinglass.hamiltonian import SpinGlass


@dataclass
class GaussianMeasure:
    mean: torch.Tensor  # [K] magnetisations m_i = <W_i>
    cov: torch.Tensor  # [K, K]
    beta: float

    @property
    def variances(self) -> torch.Tensor:
        """v_i = <W_i^2> - <W_i>^2, [K]."""
        return torch.diagonal(self.cov)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact samples [n, K] (mean + Cholesky factor of the covariance times N(0, I))."""
        L = torch.linalg.cholesky(self.cov)
        z = torch.randn(n, self.mean.shape[0], generator=generator, dtype=self.mean.dtype)
        return self.mean + z @ L.T


def exact_measure(glass: SpinGlass, beta: float) -> GaussianMeasure:
    """Mean A^-1 h and covariance (beta A)^-1 by one Cholesky factorisation of A (needs lambda0 > 0 or P >= K)."""
    A = glass.precision
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) != 0:
        raise ValueError("the precision matrix lambda0 I - J is singular: use lambda0 > 0 (or the minimum-norm solution)")
    mean = torch.cholesky_solve(glass.h.unsqueeze(-1), L).squeeze(-1)
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    cov = torch.cholesky_solve(eye, L) / beta
    return GaussianMeasure(mean=mean, cov=cov, beta=float(beta))


@dataclass
class AMPResult:
    m: torch.Tensor  # [K] magnetisations
    v: torch.Tensor  # [K] variances
    iterations: int
    error: float  # MSE(m_new, m) + MSE(v_new, v) at the last iteration
    converged: bool  # error < tol; non-converged results must not be reported as numbers


def amp(
    glass: SpinGlass,
    beta: float,
    damping: float = 0.9,
    tol: float = 1e-6,
    max_iter: int = 200,
    m0: torch.Tensor | None = None,
    v0: torch.Tensor | None = None,
    onsager: bool = True,
) -> AMPResult:
    """Cavity / approximate message passing, all coordinates at once (Jacobi updates), S_i = sum_(j!=i) J_ij^2 v_j:

    m_i <- (beta h_i + beta sum_(j!=i) J_ij m_j - [beta^2 S_i m_i]) / (beta lambda_i - beta^2 S_i)
    v_i <- 1 / (beta lambda_i - beta^2 S_i)
    then damping: m <- damping m + (1 - damping) m_new (same for v). Stops when the
    mean squared change of m plus that of v is below ``tol``.
    Starts from m = 0, v = 1 / (beta lambda) unless m0, v0 are given.

    The bracketed term is the Onsager reaction (the cavity field uses the neighbours' magnetisations without
    site i's own influence, m_j^(i) = m_j - beta J_ji v_j m_i). With it (``onsager=True``), a fixed point
    satisfies lambda_i m_i = h_i + sum_j J_ij m_j: exactly the Boltzmann mean A^-1 h. Without it (the paper's
    update and its public code: :func:`amp_paper`) the fixed point is not the mean (3-27% off at the paper's settings).
    """
    J = glass.J - torch.diag(torch.diagonal(glass.J))  # j != i
    J2 = J.pow(2)
    m = torch.zeros_like(glass.h) if m0 is None else m0.clone()
    v = 1.0 / (beta * glass.lam) if v0 is None else v0.clone()
    error = float("inf")
    it = 0
    for it in range(1, max_iter + 1):
        S = J2 @ v
        denom = beta * glass.lam - beta**2 * S
        numer = beta * glass.h + beta * (J @ m) - (beta**2 * S * m if onsager else 0.0)
        m_new = numer / denom
        v_new = 1.0 / denom
        error = float((m_new - m).pow(2).mean() + (v_new - v).pow(2).mean())
        m = damping * m + (1 - damping) * m_new
        v = damping * v + (1 - damping) * v_new
        if not np.isfinite(error):
            break
        if error < tol:
            break
    return AMPResult(m=m, v=v, iterations=it, error=error, converged=bool(np.isfinite(error) and error < tol))


def amp_paper(glass: SpinGlass, beta: float, damping: float = 0.9, tol: float = 1e-6, max_iter: int = 200,
              m0: torch.Tensor | None = None, v0: torch.Tensor | None = None) -> AMPResult:
    """The paper's AMP update (and its public code's): :func:`amp` without the Onsager reaction term."""
    return amp(glass, beta, damping, tol, max_iter, m0, v0, onsager=False)


def amp_reference_loop(
    glass: SpinGlass, beta: float, damping: float = 0.9, tol: float = 1e-6, max_iter: int = 200
) -> AMPResult:
    """The paper's AMP (:func:`amp_paper`) with a Python loop over coordinates, as its public code does.

    Kept to check :func:`amp` against and to benchmark it; do not use it for work.
    """
    J = glass.J.numpy()
    h, lam = glass.h.numpy(), glass.lam.numpy()
    K = len(h)
    m = np.zeros(K)
    v = 1.0 / (beta * lam)
    error, it = float("inf"), 0
    for it in range(1, max_iter + 1):
        m_new, v_new = np.zeros(K), np.zeros(K)
        for i in range(K):
            row = J[i].copy()
            row[i] = 0.0
            cavity_m = beta * float(row @ m)
            cavity_v = beta**2 * float((row**2) @ v)
            m_new[i] = (beta * h[i] + cavity_m) / (beta * lam[i] - cavity_v)
            v_new[i] = 1.0 / (beta * lam[i] - cavity_v)
        error = float(np.mean((m_new - m) ** 2) + np.mean((v_new - v) ** 2))
        m = damping * m + (1 - damping) * m_new
        v = damping * v + (1 - damping) * v_new
        if error < tol:
            break
    return AMPResult(m=torch.from_numpy(m), v=torch.from_numpy(v), iterations=it, error=error, converged=error < tol)


def langevin(
    glass: SpinGlass,
    beta: float,
    n_chains: int,
    n_steps: int,
    generator: torch.Generator,
    step_size: float | None = None,
    burn_in: int | None = None,
) -> torch.Tensor:
    """Unadjusted Langevin dynamics, W <- W - eta beta grad H(W) + sqrt(2 eta) xi, for all chains at once.

    grad H = A W - h. The default step is eta = 0.2 / (beta lambda_max(A)) (stable, small bias).
    Returns samples after burn-in (default: half the steps), [n_chains * kept, K].
    """
    A = glass.precision
    if step_size is None:
        step_size = 0.2 / (beta * float(torch.linalg.eigvalsh(A)[-1]))
    burn_in = n_steps // 2 if burn_in is None else burn_in
    W = torch.zeros(n_chains, A.shape[0], dtype=A.dtype)
    noise_scale = (2 * step_size) ** 0.5
    kept = []
    for step in range(n_steps):
        grad = W @ A - glass.h
        W = W - step_size * beta * grad + noise_scale * torch.randn(W.shape, generator=generator, dtype=A.dtype)
        if step >= burn_in:
            kept.append(W)
    return torch.cat(kept)
