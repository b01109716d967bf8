"""The spin-glass paper's figures as experiments (Li, Bai, Huang 2024): each a settings dataclass and a pure function
of those settings, the solver's and a random generator, returning a typed result (:class:`~iclab.results.Result`).

fig2: magnetisation maps for few vs many tasks; fig4a: the contrast ratio over (P, N); fig4b: test error against N for
the Boltzmann mean, AMP and gradient training; figS1: double descent without regularisation; figS7: zero modes;
figS4: correlated inputs; diversity: test error / contrast ratio against task diversity P. Every number is computed
exactly where the exact route exists (the measure is Gaussian); AMP results are kept only where AMP converged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from iclab.config import require, require_positive
from iclab.io import finite_or_none
from iclab.results import Result
from iclab.spinglass.boltzmann import amp, exact_measure
from iclab.spinglass.data import sample_prompts, statistics
from iclab.spinglass.hamiltonian import spin_glass, spins_to_matrix
from iclab.spinglass.order import contrast_ratio, generalization_error, min_norm_solution, zero_mode_fraction
from iclab.spinglass.training import train_linear_attention

class Checked:
    """Settings whose fields named in ``positive`` must be positive (checked when made, before anything runs)."""

    positive: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        require_positive(self, *self.positive)


@dataclass(frozen=True)
class Solver(Checked):
    """The Boltzmann measure's inverse temperature ``beta`` and AMP's damping, tolerance and iteration cap."""
    positive: ClassVar[tuple[str, ...]] = ('beta', 'max_iter', 'tol')

    beta: float = 100.0
    damping: float = 0.9
    tol: float = 1e-6
    max_iter: int = 200


@dataclass(frozen=True)
class Fig2(Checked):
    """Figure 2: magnetisation maps at few vs many tasks ``P`` (D inputs, N examples), trained maps from ``inits`` random
    starts, and gradient training vs the exact mean and AMP at ``P_gd`` tasks."""
    positive: ClassVar[tuple[str, ...]] = ('D', 'N', 'P', 'P_gd', 'gd_lr', 'gd_steps', 'n_test', 'lambda0', 'inits')

    D: int = 10
    N: int = 100
    P: tuple[int, ...] = (10, 1000)
    lambda0: float = 0.01
    P_gd: int = 5000
    gd_lr: float = 0.01
    gd_steps: int = 300
    n_test: int = 200
    inits: int = 3  # trained maps per P, each from its own random start (the paper's figure shows trained weights)
    init_std: float | None = None  # None: the authors' 1 / sqrt(D + 1) (MergedSimpLinearAttn), trained without weight decay

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.init_std is None or self.init_std > 0, "init_std", "must be positive, or null for 1 / sqrt(D + 1)")


@dataclass(frozen=True)
class Fig4a(Checked):
    """Figure 4a: the Boltzmann mean's contrast ratio over the (P, N) grid, averaged over ``repeats`` draws."""
    positive: ClassVar[tuple[str, ...]] = ('D', 'P', 'N', 'lambda0', 'repeats')

    D: int = 20
    P: tuple[int, ...] = (20, 50, 100, 200, 400, 600, 800, 1000)
    N: tuple[int, ...] = (2, 5, 10, 20, 40, 60, 80, 100)
    lambda0: float = 1.0
    repeats: int = 2


@dataclass(frozen=True)
class Fig4b(Checked):
    """Figure 4b: test error on unseen tasks against N for the exact mean, AMP and gradient training."""
    positive: ClassVar[tuple[str, ...]] = ('D', 'P', 'N', 'lambda0', 'gd_lr', 'gd_steps', 'n_test')

    D: int = 20
    P: int = 10000
    N: tuple[int, ...] = (20, 40, 60, 80, 100, 120, 140, 160, 180, 200)
    lambda0: float = 0.01
    gd_lr: float = 1e-3
    gd_steps: int = 3000
    n_test: int = 1000


@dataclass(frozen=True)
class FigS1(Checked):
    """Figure S1: test error against alpha = P / D^2 without regularisation (double descent)."""
    positive: ClassVar[tuple[str, ...]] = ('D', 'N', 'alpha', 'repeats', 'n_test')

    D: int = 20
    N: int = 100
    alpha: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0, 1.05, 1.1, 1.2, 1.4, 1.7, 2.0)
    repeats: int = 3
    n_test: int = 1000


@dataclass(frozen=True)
class FigS7(Checked):
    """Figure S7: the zero-mode fraction against P / (D (D + 1)) for several D."""
    positive: ClassVar[tuple[str, ...]] = ('D', 'N', 'fractions')

    D: tuple[int, ...] = (10, 20, 30)
    N: int = 20
    fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5)


@dataclass(frozen=True)
class FigS4(Checked):
    """Figure S4: correlated inputs (``correlation`` c along each of ``axes``): exact mean, AMP and gradient training."""
    positive: ClassVar[tuple[str, ...]] = ('D', 'N', 'P', 'lambda0', 'gd_steps', 'gd_lr', 'n_test')

    D: int = 20
    N: int = 100
    P: int = 3000
    correlation: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9)
    axes: tuple[str, ...] = ("coordinates", "examples")
    lambda0: float = 0.01
    gd_steps: int = 2000
    gd_lr: float = 3e-3
    n_test: int = 1000


@dataclass(frozen=True)
class Diversity(Checked):
    """Test error on unseen tasks and the contrast ratio against task diversity P at fixed N."""
    positive: ClassVar[tuple[str, ...]] = ('D', 'N', 'P', 'lambda0', 'repeats', 'n_test')

    D: int = 20
    N: int = 100
    P: tuple[int, ...] = (20, 50, 100, 200, 420, 1000, 2000, 5000, 10000)
    lambda0: float = 0.01
    repeats: int = 2
    n_test: int = 1000



def _prompts_and_stats(P: int, N: int, D: int, g: torch.Generator, chunk: int = 2000, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Statistics s [P, D+1, D] and labels y [P], sampled in chunks to bound memory."""
    s_parts, y_parts = [], []
    for start in range(0, P, chunk):
        prompts = sample_prompts(min(chunk, P - start), N, D, g, **kw)
        s_parts.append(statistics(prompts.Z))
        y_parts.append(prompts.y_query)
    return torch.cat(s_parts), torch.cat(y_parts)


@dataclass(frozen=True)
class AmpRecord:
    """One AMP run: whether it ``converged``, its ``iterations``, its last change (None: not finite) and, where it
    converged and the exact mean was known, its relative distance to that mean."""

    converged: bool
    iterations: int
    error: float | None
    gap_to_exact_mean: float | None = None


def _amp_or_none(glass, solver: Solver, exact: torch.Tensor | None = None, onsager: bool = True) -> tuple[torch.Tensor | None, AmpRecord]:
    """AMP's magnetisations if it converged (else None) and its record; ``onsager=False`` is the paper's update.
    With ``exact`` [K], the record holds AMP's relative distance to the exact Boltzmann mean."""
    result = amp(glass, solver.beta, solver.damping, solver.tol, solver.max_iter, onsager=onsager)
    gap = None
    if exact is not None and result.converged:
        gap = float(torch.linalg.norm(result.m - exact) / torch.linalg.norm(exact).clamp(min=1e-300))
    return (result.m if result.converged else None), AmpRecord(bool(result.converged), int(result.iterations), finite_or_none(result.error), gap)


def _error_or_none(m: torch.Tensor | None, test) -> float | None:
    return None if m is None else generalization_error(m, test)


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MagnetisationMap:
    """Figure 2 at one P: the ``trained`` maps [D+1][D+1] from each random start, their spread relative to their mean
    and their distance to the exact mean, the exact mean and variance maps, AMP's mean maps (None: not converged)
    with their records, the exact mean's contrast ratio and test error."""

    trained: list[list[list[float]]]
    init_spread: float
    trained_gap_to_exact: float
    m_exact: list[list[float]]
    v_exact: list[list[float]]
    m_amp: list[list[float]] | None
    m_amp_paper: list[list[float]] | None
    amp: AmpRecord
    amp_paper: AmpRecord
    contrast_ratio: float
    test_error: float




@dataclass(frozen=True)
class ContrastGrid(Result):
    """Figure 4a: the Boltzmann mean's contrast ratio, ``grid`` [len(N)][len(P)]."""

    P: list[int]
    N: list[int]
    grid: list[list[float]]


@dataclass(frozen=True)
class ErrorsAtN:
    """Figure 4b at one N: test errors of the exact mean, AMP (None: not converged) and gradient training."""

    exact: float
    amp: float | None
    amp_paper: float | None
    amp_paper_info: AmpRecord
    gd: float
    amp_info: AmpRecord


@dataclass(frozen=True)
class GdComparison:
    """Figure 2's comparison at ``P`` tasks: the test errors, the gradient-trained map and its losses."""

    P: int
    errors: ErrorsAtN
    W_gd: list[list[float]]
    gd_losses: list[float]


@dataclass(frozen=True)
class Fig2Result(Result):
    maps: dict[int, MagnetisationMap]
    comparison: GdComparison


@dataclass(frozen=True)
class Fig4bResult(Result):
    rows: dict[int, ErrorsAtN]


@dataclass(frozen=True)
class DoubleDescent(Result):
    """Figure S1: mean and std of the minimum-norm solution's test error per alpha = P / D^2, and (D+1)/D."""

    alpha: list[float]
    test_error: list[float]
    std: list[float]
    threshold_alpha: float


@dataclass(frozen=True)
class ZeroModeCurve:
    """Figure S7 at one D: the zero-mode fraction at each P, and K = D(D+1)."""

    P: list[int]
    fraction: list[float]
    K: int


@dataclass(frozen=True)
class ZeroModes(Result):
    rows: dict[int, ZeroModeCurve]


@dataclass(frozen=True)
class CorrelationPoint:
    """Figure S4 at one correlation c: test errors (AMP None: not converged) and the exact mean's contrast ratio."""

    c: float
    exact: float
    amp: float | None
    gd: float
    contrast_ratio: float


@dataclass(frozen=True)
class CorrelatedInputs(Result):
    """Figure S4 per correlation axis (between coordinates, between examples)."""

    rows: dict[str, list[CorrelationPoint]]


@dataclass(frozen=True)
class DiversityCurve(Result):
    """Test error on unseen tasks and contrast ratio against task diversity P, with the test labels' variance."""

    P: list[int]
    test_error: list[float]
    contrast_ratio: list[float]
    label_variance: float


# ----------------------------------------------------------------------------- parts


def fig2(f: Fig2, solver: Solver, g: torch.Generator) -> Fig2Result:
    """Magnetisation and variance maps for few vs many tasks; GD against the exact / AMP solution."""
    test = sample_prompts(f.n_test, f.N, f.D, g)
    maps = {}
    for P in f.P:
        s, y = _prompts_and_stats(P, f.N, f.D, g)
        glass = spin_glass(s, y, f.lambda0)
        measure = exact_measure(glass, solver.beta)
        m_amp, info = _amp_or_none(glass, solver, measure.mean)
        m_paper, info_paper = _amp_or_none(glass, solver, measure.mean, onsager=False)
        trained = [train_linear_attention(s, y, 0.0, g, lr=f.gd_lr, steps=f.gd_steps,
                                          init_std=f.init_std or 1 / math.sqrt(f.D + 1)).W for _ in range(f.inits)]
        stack = torch.stack(trained)  # [inits, D+1, D+1]
        exact_W = spins_to_matrix(measure.mean, f.D)
        maps[P] = MagnetisationMap(
            trained=[W.tolist() for W in trained],
            # entrywise spread over random starts relative to the size of their mean (0: a unique solution)
            init_spread=float(stack[:, :, : f.D].std(0).mean() / stack[:, :, : f.D].mean(0).pow(2).mean().sqrt()),
            trained_gap_to_exact=float(((stack - exact_W)[:, :, : f.D].pow(2).sum((1, 2)) / exact_W[:, : f.D].pow(2).sum()).sqrt().mean()),
            m_exact=spins_to_matrix(measure.mean, f.D).tolist(),
            v_exact=spins_to_matrix(measure.variances, f.D).tolist(),
            m_amp=None if m_amp is None else spins_to_matrix(m_amp, f.D).tolist(),
            m_amp_paper=None if m_paper is None else spins_to_matrix(m_paper, f.D).tolist(),
            amp=info, amp_paper=info_paper,
            contrast_ratio=float(contrast_ratio(spins_to_matrix(measure.mean, f.D))),
            test_error=float(generalization_error(measure.mean, test)))
    s, y = _prompts_and_stats(f.P_gd, f.N, f.D, g)
    errors, gd = _three_solutions(s, y, f, solver, g, test)
    return Fig2Result(maps, GdComparison(f.P_gd, errors, gd.W.tolist(), [float(x) for x in gd.losses]))


def _three_solutions(s: torch.Tensor, y: torch.Tensor, f: Fig2 | Fig4b, solver: Solver, g: torch.Generator, test):
    """The exact Boltzmann mean, AMP (with and without the Onsager term) and gradient training on statistics s [P, D+1, D]
    and labels y [P]: their test errors on ``test``, and the training result."""
    glass = spin_glass(s, y, f.lambda0)
    exact = exact_measure(glass, solver.beta).mean
    m_amp, info = _amp_or_none(glass, solver, exact)
    m_paper, info_paper = _amp_or_none(glass, solver, exact, onsager=False)
    gd = train_linear_attention(s, y, f.lambda0, g, lr=f.gd_lr, steps=f.gd_steps)
    errors = ErrorsAtN(generalization_error(exact, test), _error_or_none(m_amp, test), _error_or_none(m_paper, test), info_paper,
                       generalization_error(gd.spins, test), info)
    return errors, gd


def fig4a(f: Fig4a, solver: Solver, g: torch.Generator) -> ContrastGrid:
    """Contrast ratio of the Boltzmann mean over a (P, N) grid, averaged over repeats."""
    grid = np.zeros((len(f.N), len(f.P)))
    for i, N in enumerate(f.N):
        for j, P in enumerate(f.P):
            values = []
            for _ in range(f.repeats):
                s, y = _prompts_and_stats(P, N, f.D, g)
                mean = exact_measure(spin_glass(s, y, f.lambda0), solver.beta).mean
                values.append(contrast_ratio(spins_to_matrix(mean, f.D)))
            grid[i, j] = float(np.mean(values))
    return ContrastGrid(list(f.P), list(f.N), grid.tolist())


def fig4b(f: Fig4b, solver: Solver, g: torch.Generator) -> Fig4bResult:
    """Test error on unseen tasks against N: Boltzmann mean, AMP (if converged), GD-trained model."""
    rows = {}
    for N in f.N:
        s, y = _prompts_and_stats(f.P, N, f.D, g)
        test = sample_prompts(f.n_test, N, f.D, g)
        rows[N] = _three_solutions(s, y, f, solver, g, test)[0]
    return Fig4bResult(rows)


def figS1(f: FigS1, solver: Solver, g: torch.Generator) -> DoubleDescent:
    """Test error against alpha = P / D^2 without regularisation (minimum-norm solution)."""
    test = sample_prompts(f.n_test, f.N, f.D, g)
    means, stds = [], []
    for alpha in f.alpha:
        P = max(1, int(round(alpha * f.D**2)))
        errors = []
        for _ in range(f.repeats):
            s, y = _prompts_and_stats(P, f.N, f.D, g)
            errors.append(generalization_error(min_norm_solution(s, y), test))
        means.append(float(np.mean(errors)))
        stds.append(float(np.std(errors)))
    return DoubleDescent([float(a) for a in f.alpha], means, stds, (f.D + 1) / f.D)


def figS7(f: FigS7, solver: Solver, g: torch.Generator) -> ZeroModes:
    """Fraction of zero eigenvalues of (1/P) sum s s^T against P, for several D."""
    out = {}
    for D in f.D:
        K = D * (D + 1)
        Ps = sorted({max(1, int(round(fr * K))) for fr in f.fractions} | {K - 1, K})
        fractions = [zero_mode_fraction(_prompts_and_stats(P, f.N, D, g)[0]) for P in Ps]
        out[D] = ZeroModeCurve(Ps, [float(x) for x in fractions], K)
    return ZeroModes(out)


def figS4(f: FigS4, solver: Solver, g: torch.Generator) -> CorrelatedInputs:
    """Correlated inputs: test error of the Boltzmann mean, AMP and GD against the correlation c."""
    out: dict[str, list[CorrelationPoint]] = {}
    for axis in f.axes:
        rows = []
        for c in f.correlation:
            s, y = _prompts_and_stats(f.P, f.N, f.D, g, correlation=c, axis=axis)
            test = sample_prompts(f.n_test, f.N, f.D, g, correlation=c, axis=axis)
            glass = spin_glass(s, y, f.lambda0)
            exact = exact_measure(glass, solver.beta).mean
            m_amp, info = _amp_or_none(glass, solver)
            gd = train_linear_attention(s, y, f.lambda0, g, lr=f.gd_lr, steps=f.gd_steps)
            rows.append(CorrelationPoint(float(c), generalization_error(exact, test), _error_or_none(m_amp, test),
                                         generalization_error(gd.spins, test), float(contrast_ratio(spins_to_matrix(exact, f.D)))))
        out[axis] = rows
    return CorrelatedInputs(out)


def diversity(f: Diversity, solver: Solver, g: torch.Generator) -> DiversityCurve:
    """Test error on unseen tasks and contrast ratio against task diversity P (fixed N)."""
    test = sample_prompts(f.n_test, f.N, f.D, g)
    errors, crs = [], []
    for P in f.P:
        e, c = [], []
        for _ in range(f.repeats):
            s, y = _prompts_and_stats(P, f.N, f.D, g)
            mean = exact_measure(spin_glass(s, y, f.lambda0), solver.beta).mean
            e.append(generalization_error(mean, test))
            c.append(contrast_ratio(spins_to_matrix(mean, f.D)))
        errors.append(float(np.mean(e)))
        crs.append(float(np.mean(c)))
    return DiversityCurve(list(f.P), errors, crs, float(test.y_query.var()))

