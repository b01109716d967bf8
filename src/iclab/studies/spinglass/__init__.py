"""Study spinglass: ICL emerging with task diversity in a linear-attention spin glass (Li, Bai, Huang 2024).

Regenerates the paper's figures from the experiments in :mod:`iclab.spinglass.experiments` (CPU, float64: every
matrix is at most a few thousand wide), optionally with the task-diversity experiment of Raventós et al. (2023) on a
softmax transformer; claims in :mod:`.claims`, settings and presets in :mod:`.settings`.
"""

from __future__ import annotations

from iclab.analysis.linreg.task_diversity import TaskDiversity, task_diversity
from iclab.config import to_dict
from iclab.plots.spinglass import plot_all
from iclab.results import Result
from iclab.spinglass import experiments as X
from iclab.spinglass.experiments import Diversity, Fig2, Fig4a, Fig4b, FigS1, FigS4, FigS7, Solver
from iclab.studies.common import generator
from iclab.studies.runner import Context, Part, Study
from iclab.studies.spinglass.claims import findings
from iclab.studies.spinglass.settings import PRESETS, SpinGlassSettings, SpinGlassThresholds


def _figure(name: str, result: type[Result]) -> Part:
    """The experiment ``name`` on its own settings block, the solver's, and its own random stream."""
    experiment = getattr(X, name)

    def compute(ctx: Context[SpinGlassSettings]) -> Result:
        s = ctx.settings
        return experiment(getattr(s, name), s.solver, generator(s.seed, name))

    return Part(name, compute, result, depends=lambda s: (to_dict(getattr(s, name)), to_dict(s.solver), s.seed))


PARTS = {name: _figure(name, result) for name, result in (
    ("fig2", X.Fig2Result), ("diversity", X.DiversityCurve), ("fig4a", X.ContrastGrid), ("fig4b", X.Fig4bResult),
    ("figS1", X.DoubleDescent), ("figS7", X.ZeroModes), ("figS4", X.CorrelatedInputs))}

TASK_DIVERSITY = Part(
    "task_diversity", lambda ctx: task_diversity(ctx.settings.task_diversity, ctx.out, ctx.settings.seed, ctx.device, ctx.log),
    TaskDiversity, depends=lambda s: (to_dict(s.task_diversity), s.seed), when=lambda ctx: ctx.settings.task_diversity is not None)

NOTES = [
    "The Boltzmann mean is computed exactly (the measure is Gaussian); fig 4a uses it instead of AMP.",
    "AMP: iclab's update includes the Onsager reaction term (fixed point = the exact mean, tested to 1e-5); 'AMP (paper)' is the "
    "paper's update without it, as in its public code; figures 2 and 4b show both.",
    "Gradient training minimises the same objective H (0.5 * MSE + lambda0/2 ||W||^2) with full-batch Adam.",
    "Fig S4's correlation is reported along both axes: between coordinates (this spec) and between examples (the authors' code).",
]

STUDY: Study[SpinGlassSettings] = Study(
    "spinglass", PRESETS, parts=lambda s: [*PARTS.values(), TASK_DIVERSITY], claims=findings, figures=plot_all,
    notes=lambda s: NOTES, title="Linear attention as a spin glass; ICL from task diversity", paper="Li, Bai, Huang 2024", minutes=0.8)
run = STUDY.run

__all__ = ["PRESETS", "PARTS", "STUDY", "run", "SpinGlassSettings", "SpinGlassThresholds", "Solver", "Fig2", "Fig4a", "Fig4b",
           "FigS1", "FigS4", "FigS7", "Diversity"]
