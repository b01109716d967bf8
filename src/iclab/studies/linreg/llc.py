"""The linreg study's developmental parts: the deepest model's LLC at its snapshots (:mod:`iclab.analysis.llc_runs`)
beside the reference learner it is closest to at each (:mod:`iclab.analysis.linreg.development`), and Hoogland et
al. 2024's claims about a linear-regression transformer read off the two together: the LLC grows while the model
turns from predicting the prior's mean into an in-context regressor (their LR1 -> LR2), and later falls (LR3, LR4)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from iclab.analysis.linreg.development import LearnerTrajectory, development_learners, learner_trajectory
from iclab.analysis.llc import chains_note, stage_boundaries
from iclab.analysis.llc_runs import LLCTrajectory, llc_trajectory
from iclab.claims import Claim, Verdict, at_scale, measured, plus_minus
from iclab.studies.linreg.models import eval_data
from iclab.studies.linreg.settings import OLS_LIKE, RIDGE_LIKE, LinRegStudySettings

HOOGLAND = "Hoogland et al. 2024 (The Developmental Landscape of In-Context Learning), the linear-regression transformer"
CONTEXT_FREE = ("prior_mean",)
REGRESSORS = OLS_LIKE + RIDGE_LIKE  # least-squares learners: the model uses its context as regression does


def deepest(cfg: LinRegStudySettings) -> str:
    return f"L{max(cfg.depths)}"


def curve(ctx) -> LLCTrajectory:
    cfg = ctx.settings
    return llc_trajectory(ctx.models[deepest(cfg)].path, cfg.llc.sampler, cfg.llc.samples, cfg.llc.snapshots, device=ctx.device)


def closest_learners(ctx) -> LearnerTrajectory:
    cfg = ctx.settings
    run = ctx.models[deepest(cfg)]
    xs, ys, _, _ = eval_data(cfg, cfg.d, cfg.n_points, cfg.llc.prompts, "development")
    return learner_trajectory(run.path, run.snapshot_steps(), xs, ys, development_learners(cfg.d), ctx.device)


def llc_claims(cfg: LinRegStudySettings, res: dict[str, Any]) -> list[Claim]:
    c: LLCTrajectory | None = res.get("llc")
    learners: LearnerTrajectory | None = res.get("development")
    if c is None or learners is None:
        return []
    L, m = cfg.llc, deepest(cfg)
    llc, err = c.llc(), np.array([e.stderr for e in c.estimates])
    closest = dict(zip(learners.step, learners.closest()))
    near = [closest[s] for s in c.step]
    boundaries = stage_boundaries(c.tokens, list(llc), list(err), L.sigma)
    warned = sum(bool(e.warnings) for e in c.estimates)
    claims = [measured(
        f"{m}'s LLC along training ({len(c.step)} snapshots; {L.sampler.chains} chains x {L.sampler.draws} draws each) and the "
        "learner it is closest to (normalised SPD) at each",
        ", ".join(f"step {s}: {plus_minus(v, e)} ({n})" for s, v, e, n in zip(c.step, llc, err, near))
        + f" (mean +- standard error over the {L.sampler.chains} chains{chains_note(L.sampler.chains)})"
        + "; stage boundaries at steps " + (", ".join(f"{c.step[b.index]} ({b.kind})" for b in boundaries) or "none")
        + (f"; {warned} estimates with chain warnings (parts/llc.json)" if warned else ""), HOOGLAND,
        {f"{m}_final_llc": float(llc[-1]), f"{m}_median_llc_stderr": float(np.median(err)),
         f"{m}_n_stage_boundaries": len(boundaries)})]
    limits = {"llc.sigma": L.sigma}
    free = [i for i, n in enumerate(near) if n in CONTEXT_FREE]
    start = free[-1] if free else None
    end = next((i for i in range(start + 1, len(near)) if near[i] in REGRESSORS), None) if start is not None else None
    title = (f"{m}'s LLC grows while it turns from predicting the prior's mean into an in-context regressor (closest "
             "learner: the prior's mean, then OLS or ridge)")
    if start is None or end is None:
        claims.append(Claim(title, Verdict.NOT_APPLICABLE,
                            "no snapshot closest to the prior's mean" if start is None else
                            f"no snapshot after step {c.step[start]} closest to OLS or ridge", HOOGLAND, limits))
        return claims
    rise, both = float(llc[end] - llc[start]), float(math.hypot(err[end], err[start]))
    claims.append(Claim(
        title, Verdict.of(rise > L.sigma * both),
        f"step {c.step[start]} ({near[start]}) {plus_minus(llc[start], err[start])} -> step {c.step[end]} ({near[end]}) "
        f"{plus_minus(llc[end], err[end])}: {rise:+.1f} ({rise / both:+.1f} combined standard errors)", HOOGLAND, limits,
        why=at_scale(f"this preset's model trains {c.step[-1]:,} steps with {len(c.step)} log-spaced snapshots",
                     "500k steps, the first stage ending near step 1k", c.step[-1] < 500_000),
        values={f"{m}_llc_rise_into_icl": rise, f"{m}_llc_rise_into_icl_sigmas": rise / both if both > 0 else float("nan")}))
    drops = [(float(llc[i] - llc[i + 1]), float(math.hypot(err[i], err[i + 1])), i) for i in range(end, len(llc) - 1)]
    fall = max(drops, default=None, key=lambda d: d[0] / d[1] if d[1] > 0 else d[0])
    title = f"after it became an in-context regressor, {m}'s LLC falls between two snapshots (a stage of falling LLC)"
    if fall is None:
        claims.append(Claim(title, Verdict.NOT_APPLICABLE, f"no snapshot after step {c.step[end]}", HOOGLAND, limits))
        return claims
    drop, both, i = fall
    claims.append(Claim(
        title, Verdict.of(drop > L.sigma * both),
        f"largest fall from step {c.step[end]} on: step {c.step[i]} {plus_minus(llc[i], err[i])} -> step {c.step[i + 1]} "
        f"{plus_minus(llc[i + 1], err[i + 1])} ({-drop:+.1f}, {drop / both if both > 0 else float('nan'):.1f} combined standard "
        f"errors, each from {L.sampler.chains} chains)",
        f"{HOOGLAND}: the LLC falls in stages LR3 and LR4", limits,
        why=at_scale(f"this preset's model trains {c.step[-1]:,} steps", "500k steps, the falls after 100k (layer-norm "
                     "collapse)", c.step[-1] < 500_000),
        values={f"{m}_llc_largest_fall": drop}))
    return claims
