"""Study linreg: which learning algorithm is in-context linear regression?

Akyürek et al. (ICLR 2023), with Garg et al. (2022)'s training set-up. Trains transformers of several depths on
noiseless in-context regression, compares their predictions with reference learners by SPD and ILWD, repeats the
comparison across label-noise levels for the deepest model (MSPD table), probes hidden states for X^T y, w_OLS and
the Sherman-Morrison state against a control model trained on one fixed task, and builds Theorems 1 and 2 as
weights. Models in :mod:`.models`; analyses in :mod:`iclab.analysis.linreg.comparison` and
:mod:`iclab.analysis.linreg.probes`; claims in :mod:`.claims`; settings in :mod:`.settings`.
"""

from __future__ import annotations

import numpy as np
import torch

from iclab.analysis.linreg import comparison as C
from iclab.analysis.linreg.development import LearnerTrajectory
from iclab.analysis.linreg.probes import ProbeComparison, hidden_states, probe_layers
from iclab.analysis.llc_runs import LLCTrajectory
from iclab.learners import RIDGES
from iclab.plots.linreg import plot_all
from iclab.runs import RunDir, TrainCurve, train_curve
from iclab.studies.linreg import llc as LLC
from iclab.studies.linreg.claims import findings
from iclab.studies.linreg.models import eval_data, model_learner, noise_name, planned_runs, run_config, train_models
from iclab.studies.linreg.settings import PRESETS, LinRegStudySettings, noise_ratio
from iclab.studies.runner import Context, Part, Study

Ctx = Context[LinRegStudySettings]


def behaviour(ctx: Ctx) -> C.Behaviour:
    cfg = ctx.settings
    xs, ys, _, g = eval_data(cfg, cfg.d, cfg.n_points, cfg.eval_prompts, "behaviour")
    queries = torch.randn(cfg.ilwd_prompts, cfg.ilwd_queries * cfg.d, cfg.d, generator=g)
    steps = [float(x) / cfg.d for x in np.geomspace(0.01, 2.0, cfg.step_grid)]  # GD / SGD steps in [0.01, 2] / d
    models = {depth: model_learner(ctx.models[f"L{depth}"]) for depth in cfg.depths}
    return C.behaviour(models, xs, ys, queries, steps, g)


def noise(ctx: Ctx) -> C.NoiseTable:
    """The deepest model trained at each (sigma, tau) of the grid against ridge at every lambda = sigma^2 / tau^2 of
    the grid (lambda 0: OLS); rows and columns keyed by the ratio."""
    cfg = ctx.settings
    deepest = f"L{max(cfg.depths)}"
    runs: dict[str, RunDir] = {f"{noise_ratio(p):.4f}": ctx.models[deepest if p[0] == 0 else noise_name(p)] for p in cfg.noise_grid}
    data = {f"{noise_ratio(p):.4f}": eval_data(cfg, cfg.d, cfg.n_points, cfg.eval_prompts, "noise", noise=p)[:2] for p in cfg.noise_grid}
    return C.noise_table({key: model_learner(run) for key, run in runs.items()}, data, cfg.noise_ratios,
                         {f"{noise_ratio(p):.4f}": tuple(p) for p in cfg.noise_grid})


def probes(ctx: Ctx) -> ProbeComparison:
    """R^2 of linear and MLP probes per layer and prefix, for the probed model and the control."""
    p = ctx.settings.probing
    xs, ys, _, g = eval_data(ctx.settings, p.d, p.n_points, p.n_train + p.n_test, "probes")
    tables = [probe_layers(hidden_states(model_learner(ctx.models[which]), xs, ys), xs, ys, p.prefixes, p.n_train, g,
                           inverse_lambda=p.inverse_lambda, width=p.hidden, steps=p.probe_steps) for which in ("probe", "control")]
    return ProbeComparison(*tables)


def construction(ctx: Ctx) -> C.Constructions:
    """Theorem 1 at the GD step closest to the shallowest model; Theorem 2 at the reference ridge closest to the
    deepest model."""
    cfg, depths = ctx.settings, ctx.results["behaviour"].depths
    lr = depths[min(cfg.depths)].step_sizes["gd_1step"]
    deepest = depths[max(cfg.depths)].spd
    lam = RIDGES[min(RIDGES, key=lambda name: deepest[name].average())]
    xs, ys, _, g = eval_data(cfg, cfg.d, cfg.n_points, min(cfg.eval_prompts, 512), "construction")
    models = {depth: model_learner(ctx.models[f"L{depth}"]) for depth in cfg.depths}
    return C.constructions(models, xs, ys, lr, lam, g)


def training_curves(ctx: Ctx) -> dict[str, TrainCurve]:
    return {name: train_curve(run) for name, run in ctx.models.items()}


PARTS = [
    Part("behaviour", behaviour, C.Behaviour),
    Part("noise", noise, C.NoiseTable),
    Part("probes", probes, ProbeComparison),
    Part("curves", training_curves, cached=False),
    Part("construction", construction, C.Constructions, needs=("behaviour",)),
]
DEVELOPMENT = [
    Part("llc", LLC.curve, LLCTrajectory),
    Part("development", LLC.closest_learners, LearnerTrajectory),
]

NOTES = [
    "Noise-grid models (the paper's (sigma, tau) pairs) are fine-tuned from the noiseless deepest model in rounds until within "
    "noise_training.bayes_margin of the Bayes-optimal ridge's error (or noise_training.max_steps); the margins reached are in the noise claim.",
    "SPD / ILWD summaries are means over n >= 1 of the curves in parts/behaviour.json (normalised by d).",
    "ILWD fits implicit weights on ilwd_queries x d fresh probe inputs per prompt, through the origin (ilwd) and with an "
    "intercept (ilwd_intercept, as the authors' plotting code); kNN's stability in the number of probes is in the findings.",
    "Quick probes: MLP probes have 128 hidden units (512 in the paper preset) and are fitted at n = 2d only, to fit the CPU budget.",
]

STUDY: Study[LinRegStudySettings] = Study(
    "linreg", PRESETS, parts=lambda cfg: PARTS + (DEVELOPMENT if cfg.llc.snapshots else []), claims=findings, figures=plot_all,
    models=lambda ctx: train_models(ctx.settings, ctx.out, ctx.device, ctx.log), training=planned_runs, notes=lambda cfg: NOTES,
    title="Which learning algorithm is in-context linear regression?", paper="Akyürek et al. 2023; Garg et al. 2022", minutes=14.6)
run = STUDY.run

__all__ = ["PRESETS", "STUDY", "run", "run_config", "LinRegStudySettings"]
