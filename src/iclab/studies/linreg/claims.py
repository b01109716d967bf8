"""The linreg study's claims: Akyürek et al.'s claims as typed claims (OLS-like deepest model, the depth trend, the
noise trend, probes, the constructions of Theorems 1 and 2), and the summary numbers."""

from __future__ import annotations

from typing import Any

import numpy as np

from iclab.analysis.linreg.comparison import Behaviour, Constructions, ModelComparison, NoiseTable
from iclab.analysis.linreg.probes import ProbeComparison, ProbeTable
from iclab.claims import Claim, Verdict, Why, at_scale, measured, recipe, scale
from iclab.studies.linreg.llc import llc_claims
from iclab.studies.linreg.settings import OLS_LIKE, LinRegStudySettings

AKYUREK = "Akyürek et al. 2023"


def preset_scale(cfg: LinRegStudySettings) -> Why:
    """Why a claim on this preset's trained models may not hold: their sizes against the paper's."""
    r = cfg.recipe
    here = (f"this preset's models are {r.d_model} wide with {'/'.join(map(str, cfg.depths))} layers, trained "
            f"{'/'.join(f'{n:,}' for n in cfg.steps)} steps on d = {cfg.d}")
    return at_scale(here, "512 wide, up to 16 layers, 500k steps, d = 8 and 16 (d = 4 for the probes)",
                    r.d_model < 512 or max(cfg.steps) < 500_000)



def _probed_scale(cfg: LinRegStudySettings, reading: str = "") -> Why:
    return at_scale(f"the probed model is {cfg.recipe.d_model} wide with {cfg.probing.n_layers} layers, trained "
                    f"{cfg.probing.steps:,} steps{reading}", "512 wide, 16 layers, 500k steps", cfg.probing.steps < 500_000)


def _depth_trend(cfg: LinRegStudySettings, spd_sum: dict[int, dict[str, float]], beh: dict[int, ModelComparison],
                 own_steps: dict[str, float]) -> Claim:
    """1 layer ~ one GD step, intermediate depths ridge-like, the deepest OLS-like (closest learner moving monotonically
    along ``thresholds.depth_trend``: GD -> ridge with decreasing lambda -> OLS)."""
    depths, trend = sorted(cfg.depths), cfg.thresholds.depth_trend
    rank = {name: i for i, group in enumerate(trend) for name in group}
    closest = {dep: min(v, key=v.get) for dep, v in spd_sum.items()}
    ranks = [rank.get(closest[dep]) for dep in depths]
    middle = ranks[1:-1]
    one = depths[0]
    gap = spd_sum[one]["gd_1step"] - spd_sum[one].get("sgd", float("nan"))
    why = (scale(f"the {one}-layer model is closest to one pass of SGD, one GD step {gap:.3f} behind at "
                 f"{beh[one].step_sizes['gd_1step'] * cfg.d:.3g}/d: at so small a step the two updates agree to first order; "
                 + preset_scale(cfg).text) if closest[one] == "sgd" else preset_scale(cfg))
    ok = (len(depths) >= 2 and None not in ranks and ranks[0] == 0 and ranks[-1] == len(trend) - 1
          and all(b >= a for a, b in zip(ranks, ranks[1:])) and (not middle or any(0 < r < len(trend) - 1 for r in middle)))
    return Claim(
        "the closest learner moves with depth: 1 layer ~ one GD step, intermediate depths ridge-like, the deepest OLS-like",
        Verdict.of(ok),
        ", ".join(f"{d} layers -> {closest[d]} (SPD {spd_sum[d][closest[d]]:.3f}; one GD step "
                  f"{spd_sum[d]['gd_1step']:.3f} at {beh[d].step_sizes['gd_1step'] * cfg.d:.3g}/d, SGD "
                  f"{spd_sum[d]['sgd']:.3f} at {beh[d].step_sizes['sgd'] * cfg.d:.3g}/d)" for d in depths)
        + f"; GD and SGD take, per model, the step of a grid that brings each closest to it; steps with the learners' own "
        f"lowest error: GD {own_steps['gd_1step_best'] * cfg.d:.3g}/d, SGD {own_steps['sgd_best'] * cfg.d:.3g}/d",
        f"{AKYUREK}, figure 3", {"thresholds.depth_trend": " < ".join("/".join(g) for g in trend)},
        why=why, values={f"depth{d}_spd_closest": spd_sum[d][closest[d]] for d in depths}
        | {f"depth{d}_closest_rank": None if r is None else float(r) for d, r in zip(depths, ranks)})


def _mlp_beats_linear(cfg: LinRegStudySettings, table: ProbeTable, n: int) -> Claim:
    """The best MLP probe's held-out R^2 for w_OLS exceeds the best linear probe's by more than ``probe_z`` standard
    errors (paired over the held-out prompts); a smaller difference is a tie, not a win."""
    fit = table.fits["w_ols"][n]
    lin, mlp = fit.r2["linear"], fit.r2["mlp"]
    z = cfg.thresholds.probe_z
    statement = "MLP probes beat linear ones for w_OLS (it is encoded non-linearly)"
    diff, se = fit.mlp_minus_linear
    return Claim(statement, Verdict.of(diff > z * se),
                 f"best R^2 {max(mlp):.3f} vs {max(lin):.3f}: difference {diff:+.3f} +- {se:.3f} (standard error over "
                 f"{cfg.probing.n_test} held-out prompts), {'above' if diff > z * se else 'not above'} {z:g} standard errors",
                 f"{AKYUREK}, section 5", thresholds={"thresholds.probe_z": z},
                 why=_probed_scale(cfg, "; a tie says w_OLS is as linearly decodable here as non-linearly"),
                 values={"w_ols_best_r2_mlp": max(mlp), "w_ols_best_r2_linear": max(lin), "w_ols_mlp_minus_linear": diff,
                         "w_ols_mlp_minus_linear_se": se})


def _noise_trend(cfg: LinRegStudySettings, noise: NoiseTable) -> Claim:
    """The best-matching ridge lambda grows with sigma^2 / tau^2 and each model's minimum is on or within
    ``thresholds.noise_offset`` grid steps of the diagonal."""
    best = noise.best_ridge_lambda
    ratios = sorted(best, key=float)
    lams = sorted(float(r) for r in ratios)
    vals = [best[r] for r in ratios]
    mono = all(b >= a for a, b in zip(vals, vals[1:])) and vals[-1] > vals[0]  # lambdas of one grid: compared exactly
    offsets = [abs(lams.index(best[r]) - lams.index(float(r))) for r in ratios]
    near = all(o <= cfg.thresholds.noise_offset for o in offsets)
    excess = noise.bayes_excess
    return Claim(
        "the best-matching ridge lambda grows with the noise ratio sigma^2 / tau^2, on or next to the diagonal of the MSPD table",
        Verdict.of(mono and near),
        f"{', '.join(f'{float(r):.3f}->{v:.3f}' for r, v in zip(ratios, vals))}; on the diagonal for "
        f"{offsets.count(0)}/{len(ratios)} models, next to it for {offsets.count(1)}; noisy models' error vs the Bayes ridge "
        f"(training stops within {cfg.noise_training.bayes_margin:.0%} or at {cfg.noise_training.max_steps} steps): "
        + ", ".join(f"{float(r):.3f}: {e:+.1%}" for r, e in sorted(excess.items(), key=lambda kv: float(kv[0]))),
        f"{AKYUREK}, figure 4", {"thresholds.noise_offset": cfg.thresholds.noise_offset}, why=preset_scale(cfg),
        values={f"noise{float(r):g}_best_ridge_lambda": v for r, v in zip(ratios, vals)}
        | {f"noise{float(r):g}_bayes_excess": e for r, e in excess.items()})


EXACT = recipe("the construction is exact in float64; an error above the tolerance is a defect of iclab's weights, not "
               "a property of the paper's proof")


def _construction_claims(cfg: LinRegStudySettings, c: Constructions, probe_r2: dict[str, dict[str, list[float]]]) -> list[Claim]:
    t = cfg.thresholds
    built = Claim(
        "a transformer implements one step of gradient descent on its prompt with O(1) layers and O(d) width (Theorem 1)",
        Verdict.of(c.max_relative_error <= t.construction_tol),
        f"constructed model: {c.n_layers} blocks, width {c.d_model} = 5d + 5, MLP {c.d_mlp}, one head; max |prediction - "
        f"GD(lr {c.lr * cfg.d:.3g}/d)| / max |prediction| = {c.max_relative_error:.1e} over {c.prompts} prompts (float64)",
        f"{AKYUREK}, section 3, Theorem 1", {"thresholds.construction_tol": t.construction_tol}, why=EXACT,
        values={"gd_construction_relative_error": c.max_relative_error})
    r = c.ridge
    ridge = Claim(
        "a transformer implements ridge regression by Sherman-Morrison updates, with O(n) layers and O(d^2) width (Theorem 2)",
        Verdict.of(r.max_relative_error <= t.construction_tol),
        f"constructed model at lambda {r.lam:g} (the reference ridge closest to the deepest model): {r.n_layers} blocks = "
        f"5 (n - 1) + 2, width {r.d_model} = d^2 + 6d + 13, MLP {r.d_mlp}, {r.n_heads} heads; division through the "
        f"LayerNorm; max |prediction - ridge| / max |ridge| = {r.max_relative_error:.1e} (float64)",
        f"{AKYUREK}, section 3, Theorem 2", {"thresholds.construction_tol": t.construction_tol}, why=EXACT,
        values={"ridge_construction_relative_error": r.max_relative_error})
    model, control = probe_r2["model"], probe_r2["control"]
    compare = measured(
        "trained models against the constructed ones (SPD/d, mean over n >= 1), and probes for the constructions' "
        "intermediate quantities: X^T y (one GD step) and the Sherman-Morrison state (X^T X + lambda I)^-1",
        "SPD to one GD step: " + ", ".join(f"{dep} layers {v:.3f}" for dep, v in c.spd.items())
        + "; to Sherman-Morrison ridge: " + ", ".join(f"{dep} layers {v:.3f}" for dep, v in r.spd.items())
        + "; best MLP-probe R^2 in the probed model (control): "
        + ", ".join(f"{name} {max(model[name]):.2f} ({max(control[name]):.2f})" for name in ("XTy", "inv_gram")),
        f"{AKYUREK}, sections 3 and 5",
        {f"depth{dep}_spd_gd_construction": v for dep, v in c.spd.items()}
        | {f"depth{dep}_spd_ridge_construction": v for dep, v in r.spd.items()}
        | {f"{name}_best_r2_{who}": max(table[name]) for who, table in (("model", model), ("control", control))
           for name in ("XTy", "inv_gram")})
    return [built, ridge, compare]


def findings(cfg: LinRegStudySettings, res: dict[str, Any]) -> tuple[list[Claim], dict[str, Any]]:
    behaviour: Behaviour = res["behaviour"]
    noise: NoiseTable = res["noise"]
    pr: ProbeComparison = res["probes"]
    beh = behaviour.depths
    spd_sum = {dep: {n: c.average() for n, c in v.spd.items()} for dep, v in beh.items()}
    ilwd_sum = {dep: {n: c.average() for n, c in v.ilwd.items()} for dep, v in beh.items()}
    ilwd_icpt = {dep: {n: c.average() for n, c in v.ilwd_intercept.items()} for dep, v in beh.items()}
    closest = {dep: min(v, key=v.get) for dep, v in spd_sum.items()}
    deepest = max(cfg.depths)
    s, t = spd_sum[deepest], cfg.thresholds
    ols_curve = beh[deepest].spd["ols"].mean
    at_2d = ols_curve[2 * cfg.d] if 2 * cfg.d < cfg.n_points else ols_curve[-1]
    ok = (closest[deepest] in OLS_LIKE and s["ols"] < t.ols_margin * min(s["knn_3"], s["averaging"])
          and at_2d <= t.ols_spd_at_2d)
    claims = [Claim(
        f"the deepest model ({deepest} layers) behaves like OLS: closest to it among the learners (ridge with lambda <= 0.01 "
        "counts as OLS), far from kNN and averaging, and SPD/d to OLS small once n = 2d", Verdict.of(ok),
        f"closest: {closest[deepest]}; mean normalised SPD to OLS {s['ols']:.3f}, ridge 0.01 {s['ridge_0.01']:.3f}, ridge 0.1 "
        f"{s['ridge_0.1']:.3f}, kNN {s['knn_3']:.3f}, averaging {s['averaging']:.3f}; SPD/d to OLS at n = 2d {at_2d:.3f}",
        f"{AKYUREK}, section 4 (SPD)", {"thresholds.ols_margin": t.ols_margin, "thresholds.ols_spd_at_2d": t.ols_spd_at_2d},
        why=preset_scale(cfg),
        values={f"deepest_spd_{name}": s[name] for name in ("ols", "ridge_0.01", "ridge_0.1", "knn_3", "averaging")}
        | {"deepest_spd_ols_at_2d": at_2d})]
    frac = float(np.mean(np.array(ols_curve[1:]) < t.ols_spd))
    claims.append(Claim(
        "normalised SPD to OLS is tiny at almost every number of examples", Verdict.of(frac > t.share_of_n),
        f"below {t.ols_spd} at {frac:.0%} of n", f"{AKYUREK}, figure 2", {"thresholds.ols_spd": t.ols_spd, "thresholds.share_of_n": t.share_of_n},
        why=preset_scale(cfg),
        values={"share_of_n_ols_spd_below": frac}))
    claims.append(_depth_trend(cfg, spd_sum, beh, behaviour.step_sizes))
    stab = behaviour.knn_weight_stability
    claims.append(measured(
        "ILWD: kNN's implicit weights against the number of probe inputs (relative squared change vs a fit on 64 d probes); "
        f"ILWD here uses {behaviour.ilwd_queries} probes per prompt",
        "; ".join(f"{kind}: " + ", ".join(f"{m}d {v:.3f}" for m, v in stab[kind].items()) for kind in ("origin", "intercept"))
        + f"; closest learner by ILWD at {deepest} layers: through the origin {min(ilwd_sum[deepest], key=ilwd_sum[deepest].get)}, "
        f"with an intercept {min(ilwd_icpt[deepest], key=ilwd_icpt[deepest].get)}",
        f"{AKYUREK}, section 4 (ILWD); the authors' plotting code fits with an intercept",
        {f"knn_weight_change_{kind}_{m}d": v for kind in ("origin", "intercept") for m, v in stab[kind].items()}))
    claims.append(_noise_trend(cfg, noise))
    n_max = max(cfg.probing.prefixes)
    summary_r2 = {who: {target: table.r2(target, "mlp", n_max) for target in ("XTy", "w_ols", "inv_gram")}
                  for who, table in (("model", pr.model), ("control", pr.control))}
    parts = []
    ok = True
    for target in ("XTy", "w_ols"):
        m, c = summary_r2["model"][target], summary_r2["control"][target]
        ok &= max(m[1:]) > m[0] + t.probe_gain and max(m) > max(c) + t.probe_gain
        parts.append(f"{target}: model R^2 {m[0]:.2f} (embeddings) -> best {max(m):.2f}, control best {max(c):.2f}")
    claims.append(Claim("probes find X^T y and w_OLS better with depth, and better than in the control model", Verdict.of(ok),
                        f"MLP probes, n={n_max}; " + "; ".join(parts), f"{AKYUREK}, section 5", {"thresholds.probe_gain": t.probe_gain},
                        why=_probed_scale(cfg),
                        values={f"{target}_r2_{where}": v for target in ("XTy", "w_ols") for where, v in (
                            ("embeddings", summary_r2["model"][target][0]), ("best_layer", max(summary_r2["model"][target])),
                            ("control_best", max(summary_r2["control"][target])))}))
    claims += _construction_claims(cfg, res["construction"], summary_r2)
    claims.append(_mlp_beats_linear(cfg, pr.model, n_max))
    claims += llc_claims(cfg, res)
    numbers = {
        "spd": spd_sum,
        "ilwd": ilwd_sum,
        "ilwd_intercept": ilwd_icpt,
        "closest_learner": closest,
        "mspd_table": noise.mspd_table,
        "best_ridge_lambda": noise.best_ridge_lambda,
        "noise_bayes_excess": noise.bayes_excess,
        "probe_r2": summary_r2,
        "construction": res["construction"],
    }
    return claims, numbers
