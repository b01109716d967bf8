"""The spinglass study's claims: a typed claim per claim of Li, Bai, Huang (2024), and the summary numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from iclab.claims import Claim, Verdict, Why, at_scale, measured
from iclab.io import finite_or_none
from iclab.spinglass.experiments import CorrelatedInputs, DiversityCurve, DoubleDescent, Fig2Result, Fig4bResult, ZeroModes
from iclab.studies.spinglass.settings import SpinGlassSettings



LI = "Li, Bai, Huang 2024"


def _grids(cfg: SpinGlassSettings) -> Why:
    """Why a claim may not hold here: the quantities are exact, so what differs is how few draws and grid points."""
    here = (f"this preset averages {cfg.diversity.repeats} draws, on {len(cfg.fig4a.P)} x {len(cfg.fig4a.N)} (P, N) points and "
            f"{len(cfg.figS1.alpha)} alpha")
    return at_scale(here, "10 draws, 50 x 50 (P, N) points and 39 alpha (the paper preset)",
                    cfg.diversity.repeats < 10 or len(cfg.fig4a.P) < 50)


def findings(cfg: SpinGlassSettings, results: dict[str, Any]) -> tuple[list[Claim], dict[str, Any]]:
    """A typed claim per claim of the paper, and the summary numbers."""
    t = cfg.thresholds
    why = _grids(cfg)
    div: DiversityCurve = results["diversity"]
    err, cr = div.test_error, div.contrast_ratio
    rho_err = float(np.corrcoef(np.log(div.P), err)[0, 1])
    claims = [Claim(
        "test error on unseen tasks falls with task diversity P", Verdict.of(err[-1] < t.error_drop * err[0] and rho_err < t.error_correlation),
        f"D={cfg.diversity.D}, N={cfg.diversity.N}: {err[0]:.3f} at P={div.P[0]} -> {err[-1]:.4f} at P={div.P[-1]}; correlation "
        f"with log P {rho_err:+.2f}; label variance {div.label_variance:.3f}", f"{LI}, section 4",
        {"thresholds.error_drop": t.error_drop, "thresholds.error_correlation": t.error_correlation},
        why=why, values={"test_error_fewest_tasks": float(err[0]), "test_error_most_tasks": float(err[-1]), "error_log_p_correlation": rho_err})]
    target = np.sqrt(cfg.diversity.D / (cfg.diversity.D + 1))
    claims.append(Claim(
        "the contrast ratio rises toward the ICL solution's sqrt(D/(D+1)) with P", Verdict.of(cr[-1] > cr[0] and cr[-1] > t.min_contrast_ratio),
        f"{cr[0]:.3f} -> {cr[-1]:.3f}; sqrt(D/(D+1)) = {target:.3f}", f"{LI}, section 4", {"thresholds.min_contrast_ratio": t.min_contrast_ratio},
        why=why, values={"contrast_ratio_fewest_tasks": float(cr[0]), "contrast_ratio_most_tasks": float(cr[-1])}))
    grid = np.array(results["fig4a"].grid)
    ok = (grid[-1, -1] > grid[0, 0] and np.all(np.diff(grid.mean(axis=0)) > -t.monotone_slack)
          and np.all(np.diff(grid.mean(axis=1)) > -t.monotone_slack))
    claims.append(Claim(
        "the contrast ratio grows with both the number of tasks P and the prompt length N", Verdict.of(ok),
        f"lambda0={cfg.fig4a.lambda0}: {grid[0, 0]:.3f} at the smallest (P, N), {grid[-1, -1]:.3f} at the largest", f"{LI}, figure 4a",
        {"thresholds.monotone_slack": t.monotone_slack},
        why=why, values={"fig4a_contrast_ratio_smallest": float(grid[0, 0]), "fig4a_contrast_ratio_largest": float(grid[-1, -1])}))
    f4b: Fig4bResult = results["fig4b"]
    rel = [abs(r.gd - r.exact) / r.exact for r in f4b.rows.values()]
    amp_ok = [r.amp is not None for r in f4b.rows.values()]
    gaps = {name: [g for r in f4b.rows.values() if (g := getattr(r, key).gap_to_exact_mean) is not None]
            for name, key in (("with the Onsager term", "amp_info"), ("the paper's update", "amp_paper_info"))}
    claims_amp = measured(
        "AMP's magnetisations against the exact Boltzmann mean A^-1 h (beyond the paper: its AMP update, as in its public code, "
        "leaves out the Onsager reaction term, so its fixed point is not the mean)",
        "; ".join(f"{name}: largest relative distance {max(g):.1e} over {len(g)} converged N" if g else f"{name}: never converged"
                  for name, g in gaps.items()), f"{LI}, figures 2 and 4b; iclab",
        {"amp_onsager_gap_to_exact": max(gaps["with the Onsager term"], default=None),
         "amp_paper_gap_to_exact": max(gaps["the paper's update"], default=None)})
    claims.append(Claim(
        "the Boltzmann mean and the gradient-trained model agree on test error for every N", Verdict.of(max(rel) < t.gd_gap),
        f"largest relative gap {max(rel):.2%}; AMP converged for {sum(amp_ok)}/{len(amp_ok)} N", f"{LI}, figure 4b", {"thresholds.gd_gap": t.gd_gap},
        why=why, values={"gd_gap_to_exact": float(max(rel)), "amp_converged_share": sum(amp_ok) / len(amp_ok)}))
    claims.append(claims_amp)
    s7: ZeroModes = results["figS7"]
    thresholds = {}
    for D, row in s7.rows.items():
        floor = row.fraction[-1]
        thresholds[D] = next(P for P, fr in zip(row.P, row.fraction) if fr <= floor + t.zero_mode_tol)
    claims.append(Claim(
        "the zero-mode fraction reaches its floor at P = D(D+1)",
        Verdict.of(all(abs(thresholds[D] - int(D) * (int(D) + 1)) <= t.zero_mode_offset for D in thresholds)),
        ", ".join(f"D={D}: P={P}" for D, P in thresholds.items()), f"{LI}, figure S7",
        {"thresholds.zero_mode_tol": t.zero_mode_tol, "thresholds.zero_mode_offset": t.zero_mode_offset},
        why=why, values={f"zero_mode_floor_P_D{D}": float(P) for D, P in thresholds.items()}))
    s1: DoubleDescent = results["figS1"]
    peak = s1.alpha[int(np.argmax(s1.test_error))]
    spacing = max(np.diff(sorted(s1.alpha))) if len(s1.alpha) > 1 else 1.0
    distance, allowed = abs(peak - s1.threshold_alpha), t.peak_steps * spacing
    claims.append(Claim(
        "without regularisation the test error peaks at P = D(D+1) (double descent)",
        Verdict.of(distance < allowed or math.isclose(distance, allowed)),  # isclose: grid values are decimal floats
        f"peak at alpha = {peak}, expected alpha = {s1.threshold_alpha:.3f} (within {t.peak_steps:g} grid step(s)); peak error "
        f"{max(s1.test_error):.3g}", f"{LI}, figure S1", {"thresholds.peak_steps": t.peak_steps},
        why=why, values={"double_descent_peak_alpha": float(peak), "double_descent_expected_alpha": float(s1.threshold_alpha)}))
    s4: CorrelatedInputs = results["figS4"]
    parts, s4_values = [], {}
    for axis, rows in s4.rows.items():
        gap = max(abs(r.gd - r.exact) / r.exact for r in rows)
        errors = [r.exact for r in rows]
        steps = np.diff(errors)
        shape = "rises monotonically" if np.all(steps >= 0) else "falls monotonically" if np.all(steps <= 0) else "is not monotone"
        curve = ", ".join(f"c={r.c:g}: {r.exact:.3f}" for r in rows)
        parts.append(f"{axis}: test error {shape} in c ({curve}); GD gap at most {gap:.2%}")
        s4_values.update({f"figS4_{axis}_error_c{r.c:g}": float(r.exact) for r in rows})
    claims.append(measured("test error of the Boltzmann mean against the input correlation c, the whole curve", "; ".join(parts),
                           f"{LI}, figure S4", s4_values))
    f2: Fig2Result = results["fig2"]
    few, many = (f2.maps[P] for P in (cfg.fig2.P[0], cfg.fig2.P[-1]))
    amp = "n/a (not converged)" if f2.comparison.errors.amp is None else format(f2.comparison.errors.amp, ".4f")
    claims.append(measured(
        "with few tasks the trained map is not unique: random starts keep their own null-space part; with many they agree",
        f"spread over {cfg.fig2.inits} random starts (init std {cfg.fig2.init_std or 1 / math.sqrt(cfg.fig2.D + 1):.3f}, no weight decay, "
        f"Adam {cfg.fig2.gd_lr}, {cfg.fig2.gd_steps} full-batch steps, as the authors' fig-2 script) relative to their mean: "
        f"{few.init_spread:.3f} with P={cfg.fig2.P[0]} vs {many.init_spread:.3f} with P={cfg.fig2.P[-1]}; relative distance to "
        f"the exact Boltzmann mean {few.trained_gap_to_exact:.2f} vs {many.trained_gap_to_exact:.2f}", f"{LI}, figure 2",
        {"fig2_init_spread_few": few.init_spread, "fig2_init_spread_many": many.init_spread,
         "fig2_gap_to_exact_few": few.trained_gap_to_exact, "fig2_gap_to_exact_many": many.trained_gap_to_exact}))
    claims.append(measured(f"contrast ratio of the Boltzmann-mean map with few vs many tasks (D={cfg.fig2.D})",
                           f"{few.contrast_ratio:.3f} with P={cfg.fig2.P[0]} vs {many.contrast_ratio:.3f} with P={cfg.fig2.P[-1]}; "
                           f"at P={f2.comparison.P} test error exact {f2.comparison.errors.exact:.4f}, GD {f2.comparison.errors.gd:.4f}, "
                           f"AMP {amp}", f"{LI}, figure 2",
                           {"fig2_contrast_ratio_few": few.contrast_ratio, "fig2_contrast_ratio_many": many.contrast_ratio,
                            "fig2_test_error_exact": f2.comparison.errors.exact, "fig2_test_error_gd": f2.comparison.errors.gd,
                            "fig2_test_error_amp": f2.comparison.errors.amp}))
    numbers = {
        "fig4b": {N: {"exact": r.exact, "amp": finite_or_none(r.amp) if r.amp is not None else None,
                      "amp_paper": finite_or_none(r.amp_paper) if r.amp_paper is not None else None, "gd": r.gd}
                  for N, r in f4b.rows.items()},
        "zero_mode_threshold": thresholds,
        "double_descent_peak_alpha": peak,
        "contrast_ratio": results["fig4a"],
    }
    if "task_diversity" in results:
        rows = results["task_diversity"].rows
        numbers["task_diversity"] = rows
        claims.append(measured("a softmax transformer trained on a pool of M tasks is closer to dMMSE for small M and to ridge above "
                               "a threshold", ", ".join(f"M={r.M}: {r.closer_to} (error {r.error['model']:.3f}, ridge "
                                                        f"{r.error['ridge']:.3f}, dMMSE {r.error['dmmse']:.3f})" for r in rows),
                               "Raventós et al. 2023", {f"task_diversity_M{r.M}_error": r.error["model"] for r in rows}))
    return claims, numbers

