"""The induction study's developmental-interpretability parts: the LLC along training of the chosen models
(:mod:`iclab.analysis.llc_runs`), each head's refined LLC just before and just after the phase-change window, and
Hoogland et al. 2024's / Wang et al. 2024's claims checked against the study's causal evidence (its window, its
induction heads)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from iclab.analysis.induction.phase_change import PhaseChange
from iclab.analysis.llc import FEW_CHAINS, chains_note, stage_boundaries
from iclab.analysis.llc_runs import LLCTrajectory, llc_trajectory
from iclab.claims import Claim, Verdict, Why, at_scale, measured, plural, plus_minus
from iclab.studies.induction.settings import InductionStudySettings

HOOGLAND = "Hoogland et al. 2024 (The Developmental Landscape of In-Context Learning)"
WANG = "Wang et al. 2024 (Differentiation and Specialization of Attention Heads via the Refined LLC)"


def sampling(cfg: InductionStudySettings, snapshots: int) -> Why:
    """Why an LLC claim may not hold: how few snapshots, chains and draws this preset estimates with."""
    L = cfg.llc.sampler
    return at_scale(f"the LLC is estimated at {snapshots} snapshots with {L.chains} chains x {L.draws} draws; a change "
                    f"smaller than {cfg.llc.sigma} combined standard errors is not counted",
                    "more chains and draws, at many more checkpoints", L.chains < FEW_CHAINS)


def llc_models(cfg: InductionStudySettings) -> list[str]:
    return [m for m in cfg.llc.models if m in cfg.models]


def curve(ctx, m: str) -> LLCTrajectory:
    cfg = ctx.settings
    return llc_trajectory(ctx.models.runs[m].path, cfg.llc.sampler, cfg.llc.samples, cfg.llc.snapshots, device=ctx.device)


def around_window(ctx) -> LLCTrajectory:
    """Every head's refined LLC at the head model's saved snapshots just before and just after its window."""
    cfg = ctx.settings
    m = cfg.llc.head_model
    w = ctx.results["phase_change"][m].window
    run = ctx.models.runs[m]
    saved = run.snapshot_steps()
    tokens_per_step = ctx.results["trajectories"][m].tokens_per_step
    before = max((s for s in saved if s * tokens_per_step <= w.start_tokens), default=saved[0])
    after = min((s for s in saved if s * tokens_per_step >= w.end_tokens), default=saved[-1])
    return llc_trajectory(run.path, cfg.llc.sampler, cfg.llc.samples, heads=True, steps=sorted({before, after}), device=ctx.device)


def has_head_window(ctx) -> bool:
    m = ctx.settings.llc.head_model
    return m in ctx.settings.models and ctx.results["phase_change"][m].window is not None


def _in(window, tokens: float) -> bool:
    return window is not None and window.start_tokens <= tokens <= window.end_tokens


def llc_claims(cfg: InductionStudySettings, res: dict[str, Any]) -> list[Claim]:
    pc: dict[str, PhaseChange] = res["phase_change"]
    curves = {m: res[f"llc_{m}"] for m in llc_models(cfg) if f"llc_{m}" in res}
    if not curves:
        return []
    L = cfg.llc
    claims = []
    boundaries = {m: stage_boundaries(c.tokens, list(c.llc()), [e.stderr for e in c.estimates], L.sigma) for m, c in curves.items()}
    for m, c in curves.items():
        errs = np.array([e.stderr for e in c.estimates])
        steps = np.abs(np.diff(c.llc()))
        warned = sum(bool(e.warnings) for e in c.estimates)
        claims.append(measured(
            f"{m}'s LLC along training ({len(c.step)} snapshots; {L.sampler.chains} chains x {L.sampler.draws} draws each)",
            ", ".join(f"{tok:.3g}: {e.llc:.1f}" for tok, e in zip(c.tokens, c.estimates))
            + f"; standard errors {np.median(errs):.2f} (median) against steps between snapshots of {np.median(steps):.2f} "
            f"(median){chains_note(L.sampler.chains)}; stage boundaries at "
            + (", ".join(f"{b.tokens:.3g} ({b.kind})" for b in boundaries[m]) or "none")
            + (f"; {warned} estimates with chain warnings (llc_{m}.json)" if warned else ""), HOOGLAND,
            {f"{m}_final_llc": float(c.llc()[-1]), f"{m}_median_llc_stderr": float(np.median(errs)),
             f"{m}_n_stage_boundaries": len(boundaries[m])}))
    m2 = L.head_model
    w = pc[m2].window if m2 in pc else None
    limits = {"llc.sigma": L.sigma}
    if m2 in curves:
        inside = [b for b in boundaries[m2] if _in(w, b.tokens)]
        claims.append(Claim(
            f"a stage boundary of {m2}'s LLC curve (a critical point) falls inside its phase-change window",
            Verdict.NOT_APPLICABLE if w is None else Verdict.of(bool(inside)),
            ("no phase-change window" if w is None else f"window {w.start_tokens:.3g}-{w.end_tokens:.3g} tokens; boundaries "
             + (", ".join(f"{b.tokens:.3g} ({b.kind})" for b in boundaries[m2]) or "none")
             + f"; {sum(bool(e.warnings) for e in curves[m2].estimates)} of {len(curves[m2].step)} estimates with chain warnings"),
            f"{HOOGLAND}, the two-layer attention-only language model", limits,
            why=sampling(cfg, len(curves[m2].step)), values={f"{m2}_boundaries_in_window": len(inside)}))
    for m in curves:
        if m == m2 or not m.startswith("attn1"):
            continue
        inside = [b for b in boundaries[m] if _in(w, b.tokens)]
        claims.append(Claim(
            f"{m} (no induction heads possible) shows no stage boundary inside {m2}'s phase-change window",
            Verdict.NOT_APPLICABLE if w is None else Verdict.of(not inside),
            "no window to compare" if w is None else f"{plural(len(inside), 'boundary', 'boundaries')} of {m} in {w.start_tokens:.3g}-{w.end_tokens:.3g} tokens",
            f"iclab's control for {HOOGLAND}", limits, why=sampling(cfg, len(curves[m].step)), values={f"{m}_boundaries_in_{m2}_window": len(inside)}))
    claims += head_claims(cfg, res)
    return claims


def head_claims(cfg: InductionStudySettings, res: dict[str, Any]) -> list[Claim]:
    """Wang et al.: across the phase change the induction heads' refined LLC rises while the other heads' does not."""
    m = cfg.llc.head_model
    around: LLCTrajectory | None = res.get("llc_heads")
    if f"llc_{m}" not in res:
        return []
    title = f"{m}'s induction heads' refined LLC rises across the phase-change window while the other heads' does not"
    if around is None or len(around.step) < 2:
        return [Claim(title, Verdict.NOT_APPLICABLE, "no phase-change window (or no snapshot on both sides of it)", WANG,
                      {"llc.sigma": cfg.llc.sigma})] if m in cfg.models else []
    ind = {str(h.head) for h in res["heads"][m]}
    rise = {h: (v[-1].llc - v[0].llc, math.hypot(v[-1].stderr, v[0].stderr)) for h, v in around.heads.items()}
    ind_rise = [rise[h] for h in rise if h in ind]
    other_rise = [rise[h] for h in rise if h not in ind]

    def mean(parts):
        if not parts:
            return float("nan"), float("nan")
        return float(np.mean([r for r, _ in parts])), float(math.sqrt(sum(e * e for _, e in parts)) / len(parts))

    (ri, ei), (ro, eo) = mean(ind_rise), mean(other_rise)
    ok = bool(ind_rise) and ri > cfg.llc.sigma * ei and not (ro > cfg.llc.sigma * eo)
    warned = sum(bool(e.warnings) for v in around.heads.values() for e in v)
    return [Claim(
        title, Verdict.of(ok) if ind_rise else Verdict.NOT_APPLICABLE,
        f"from step {around.step[0]} to {around.step[-1]}: induction heads ({', '.join(sorted(ind)) or 'none'}) {plus_minus(ri, ei)}, "
        f"the other {len(other_rise)} heads {plus_minus(ro, eo)}; per head " + ", ".join(f"{h} {r:+.2f}" for h, (r, _) in sorted(rise.items()))
        + (f"; {warned} of {2 * len(rise)} estimates with chain warnings (llc_heads.json)" if warned else ""),
        WANG, {"llc.sigma": cfg.llc.sigma}, why=sampling(cfg, len(around.step)), values={f"{m}_induction_heads_rllc_rise": ri, f"{m}_other_heads_rllc_rise": ro})]
