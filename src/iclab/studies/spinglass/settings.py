"""The spinglass study's settings: one block per figure (the experiments' own settings), the thresholds its claims
use, and the presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from iclab.analysis.linreg.task_diversity import TaskDiversitySettings
from iclab.config import require, require_positive
from iclab.spinglass.experiments import Diversity, Fig2, Fig4a, Fig4b, FigS1, FigS4, FigS7, Solver


@dataclass(frozen=True)
class SpinGlassThresholds:
    """The numbers the claims' verdicts use, stated before any run."""

    error_drop: float = 0.2  # test error at the largest P below this fraction of the error at the smallest
    error_correlation: float = -0.8  # ... and correlated with log P below this
    min_contrast_ratio: float = 0.9  # the contrast ratio at the largest P must exceed this
    monotone_slack: float = 0.02  # fig 4a: averaged rows / columns may dip by at most this
    gd_gap: float = 0.15  # fig 4b: relative test-error gap between gradient training and the Boltzmann mean
    zero_mode_tol: float = 1e-12  # fig S7: a zero-mode fraction within this of its floor counts as at the floor (float noise)
    zero_mode_offset: int = 0  # ... and the first P at the floor may differ from D(D+1) by at most this (the paper: exactly there)
    peak_steps: float = 1.0  # fig S1: the test-error peak lies within this many alpha grid steps of (D+1)/D

    def __post_init__(self) -> None:
        require(0 < self.error_drop <= 1, "error_drop", f"must lie in (0, 1], got {self.error_drop}")
        require(-1 <= self.error_correlation <= 1, "error_correlation", f"must lie in [-1, 1], got {self.error_correlation}")
        for name in ("min_contrast_ratio", "gd_gap", "peak_steps"):
            require(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        for name in ("monotone_slack", "zero_mode_tol", "zero_mode_offset"):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class SpinGlassSettings:
    preset: Literal["quick", "paper"] = "quick"
    seed: int = 0
    seeds: int = 3  # the seeds trained and analysed, seed .. seed + seeds - 1; a claim's verdict is judged over them
    solver: Solver = field(default_factory=Solver)
    fig2: Fig2 = field(default_factory=Fig2)
    fig4a: Fig4a = field(default_factory=Fig4a)
    fig4b: Fig4b = field(default_factory=Fig4b)
    figS1: FigS1 = field(default_factory=FigS1)
    figS7: FigS7 = field(default_factory=FigS7)
    figS4: FigS4 = field(default_factory=FigS4)
    diversity: Diversity = field(default_factory=Diversity)
    task_diversity: TaskDiversitySettings | None = None
    thresholds: SpinGlassThresholds = field(default_factory=SpinGlassThresholds)

    def __post_init__(self) -> None:
        require_positive(self, "seeds")
        for axis in self.figS4.axes:
            require(axis in ("coordinates", "examples"), "figS4.axes", f"entries must be 'coordinates' or 'examples', got {axis!r}")
        require(all(0 <= c < 1 for c in self.figS4.correlation), "figS4.correlation", "entries must lie in [0, 1)")


PRESETS = {
    "quick": SpinGlassSettings(),
    "paper": SpinGlassSettings(
        preset="paper",
        fig4a=Fig4a(
            P=tuple(int(p) for p in np.linspace(20, 1000, 50)),
            N=tuple(int(n) for n in np.linspace(2, 100, 50)),
            repeats=10,
        ),
        fig4b=Fig4b(gd_steps=5000),
        figS1=FigS1(alpha=tuple(round(a, 3) for a in np.linspace(0.1, 2.0, 39)), repeats=10),
        figS7=FigS7(D=(10, 20, 30, 40), fractions=(0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.05, 1.25, 1.5, 2.0)),
        figS4=FigS4(P=10000, N=200, correlation=tuple(round(c, 2) for c in np.linspace(0.05, 0.95, 19)), gd_steps=5000, gd_lr=1e-3),
        diversity=Diversity(repeats=10),
        task_diversity=TaskDiversitySettings(),
    ),
}

