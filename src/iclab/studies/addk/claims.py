"""The addk study's claims: Hu et al. (2025)'s claims as typed claims, the accuracy scan over prompt formats, and
NOT APPLICABLE for every localisation claim on a model without the behaviour."""

from __future__ import annotations

from typing import Any

import numpy as np

from iclab.analysis.addk import MeanCI
from iclab.analysis.addk.pipeline import (
    CleanAccuracy,
    CleanScan,
    DemoPatching,
    Localisation,
    Projection,
    SelfCorrection,
    Subspaces,
)
from iclab.analysis.addk.task_vectors import TaskVectorCurve
from iclab.claims import Claim, Verdict, Why, measured, plural, subject
from iclab.studies.addk.settings import AddKStudySettings

HU = "Hu et al. 2025"

# The localisation claims' statements, one each whatever the model or seed (a claim is matched across seeds by its
# statement; the heads it is about are in its measured words): below the clean-accuracy bar all are NOT APPLICABLE.
SPARSE = "a sparse set of heads carries the task: their function vector restores it zero-shot"
NECESSARY = "the main heads are necessary: mean-ablating only them at the final token breaks few-shot addition"
SUBSPACE = ("the main heads' task means each span about six dimensions: four tracking the unit digit (periods 2, 5, 10), "
            "two the magnitude (periods 25, 50)")
LABELS = "the main heads take their signal from the demonstrations' label tokens (paper: 96-99%)"
SELF_CORRECTION = ("self-correction: successive demonstrations' signal deviations are negatively correlated and an early "
                   "wrong demonstration hurts no more than a late one")
LOCALISATION = (SPARSE, NECESSARY, SUBSPACE, LABELS, SELF_CORRECTION)


def _ci(m: MeanCI, fmt: str = ".2f") -> str:
    return f"{m.mean:{fmt}} [{m.ci[0]:{fmt}}, {m.ci[1]:{fmt}}]"


def _subject(cfg: AddKStudySettings, res: dict[str, Any]) -> Why:
    """Why a claim may not hold on this subject: which model it is, against Hu et al.'s pretrained language models."""
    if cfg.planted == "random":
        return subject("the planted negative control: its task heads carry k in a random code, by design not the paper's")
    if cfg.planted == "periodic":
        return subject("the planted model carries k in the paper's six periodic features by hand; a claim failing here points "
                       "at iclab's analysis, not at the paper")
    name = res["model"]
    if cfg.model is not None:
        return subject(f"{name} is not one of Hu et al.'s models (Llama-3-8B-Instruct and other pretrained models of "
                       "billions of parameters)")
    tv: TaskVectorCurve | None = res.get("task_vectors")
    curve = (f"; its task-vector curve peaks at {tv.best:.2f} zero-shot accuracy at L{tv.best_layer} (unpatched "
             f"{tv.zero_shot:.2f})" if tv is not None else "")
    return subject(f"iclab's {cfg.recipe.n_layers}-layer subject is trained on add-k prompts alone, where Hu et al.'s models are "
                   f"pretrained on text and meet add-k among countless tasks{curve}")


def _clean_values(clean: CleanAccuracy) -> dict[str, float]:
    return {"clean_accuracy": clean.train_tasks, "clean_accuracy_held_out": clean.held_out_tasks}


def localised(cfg: AddKStudySettings, res: dict[str, Any]) -> tuple[list[Claim], dict[str, Any]]:
    clean: CleanAccuracy = res["clean_accuracy"]
    loc: Localisation = res["localisation"]
    sub: Subspaces = res["subspaces"]
    sc: SelfCorrection = res["self_correction"]
    acc, t = loc.accuracy, cfg.thresholds
    why = _subject(cfg, res)
    claims = [measured("clean few-shot exact-match accuracy",
                       f"{cfg.task.shots}-shot: {clean.train_tasks:.2f} on training tasks, {clean.held_out_tasks:.2f} on held-out "
                       f"tasks k = {list(cfg.task.held_out)}", HU, _clean_values(clean))]
    n_heads = loc.n_heads
    sparse = len(loc.selected) <= t.max_selected_share * n_heads and acc.selected_fv > acc.zero_shot + t.min_fv_gain
    claims.append(Claim(
        SPARSE, Verdict.of(sparse),
        f"{len(loc.selected)} of {plural(n_heads, 'head')} selected; their function vector lifts zero-shot accuracy from "
        f"{acc.zero_shot:.2f} to {acc.selected_fv:.2f} (layer {loc.layer})", f"{HU}, section 3",
        {"thresholds.max_selected_share": t.max_selected_share, "thresholds.min_fv_gain": t.min_fv_gain}, why=why,
        values={"n_selected_heads": len(loc.selected), "selected_share": len(loc.selected) / n_heads,
                "zero_shot_accuracy": acc.zero_shot, "selected_fv_accuracy": acc.selected_fv}))
    best_gain = loc.main_rule.best_gain
    claims.append(measured("nested head sets: selected, significant, main",
                           f"selected {len(loc.selected)} (largest gap of the mask), significant {len(loc.significant)} (single-head "
                           f"sufficiency: recovery scan c = 0..{cfg.c_max}, one-sided McNemar against c = 0, Bonferroni over c, "
                           f"Benjamini-Hochberg q = {cfg.q}), main {len(loc.main)} ({', '.join(map(str, loc.main)) or 'none'}) (peak recovery gain >= "
                           f"{cfg.main_fraction} of the best head's, {best_gain:+.2f}); paper 33 / 13 / 3 on Llama-3-8B", HU,
                           {"n_significant_heads": len(loc.significant), "n_main_heads": len(loc.main), "best_recovery_gain": best_gain}))
    if loc.main and acc.few_shot_main_ablated is not None:
        drop = acc.few_shot_clean - acc.few_shot_main_ablated
        rand = [acc.few_shot_clean - r for r in acc.few_shot_random_ablated]
        rand_mean = float(np.mean(rand)) if rand else float("nan")
        ok = drop >= t.min_necessity_drop and (not rand or drop >= t.necessity_ratio * max(rand_mean, 0.0))
        claims.append(Claim(
            NECESSARY, Verdict.of(ok),
            f"{cfg.task.shots}-shot accuracy {acc.few_shot_clean:.2f} clean, {acc.few_shot_main_ablated:.2f} with the "
            f"{plural(len(loc.main), 'main head')} ablated (drop {drop:.2f}); random sets of the same size: drop "
            + ", ".join(f"{r:.2f}" for r in rand), f"{HU}, section 3.2 (five-shot necessity)",
            {"thresholds.min_necessity_drop": t.min_necessity_drop, "thresholds.necessity_ratio": t.necessity_ratio}, why=why,
            values={"few_shot_accuracy_clean": acc.few_shot_clean, "few_shot_accuracy_main_ablated": acc.few_shot_main_ablated,
                    "random_ablation_mean_drop": rand_mean if rand else None}))
    else:
        claims.append(Claim(NECESSARY, Verdict.NOT_APPLICABLE, "no main head: no scanned head recovers the task", f"{HU}, section 3.2"))
    claims += head_claims(cfg, res, why)
    claims.append(measured(f"one wrong demonstration (label + {cfg.corrupt_offset}; iclab's own test: self-correction predicts the "
                           "early error hurts less)", f"accuracy {sc.clean:.2f} clean, {sc.first_wrong:.2f} with the first wrong, "
                           f"{sc.last_wrong:.2f} with the last wrong", "iclab",
                           {"accuracy_clean": sc.clean, "accuracy_first_wrong": sc.first_wrong, "accuracy_last_wrong": sc.last_wrong}))
    claims += patching_claims(res) + task_vector_claims(res)
    numbers = {
        "model": res["model"],
        "clean_accuracy": clean.train_tasks,
        "clean_accuracy_held_out": clean.held_out_tasks,
        "heads": {"selected": loc.selected, "significant": loc.significant, "main": loc.main},
        "accuracy": {"selected_fv": acc.selected_fv, "few_shot_clean": acc.few_shot_clean,
                     "few_shot_main_ablated": acc.few_shot_main_ablated},
        "pcs_to_95": {h: s.pcs_to_95 for h, s in sub.heads.items()},
        "periodic_r2": {h: {pc: fit.r2 for pc, (_, fit) in s.best_fits().items()} for h, s in sub.heads.items()},
        "label_token_signal_share": {h: s.signal_label_share for h, s in sub.heads.items()},
    }
    return claims, numbers


def task_vector_claims(res: dict[str, Any]) -> list[Claim]:
    """The task-vector curve (measured: Hendel et al.'s patching, the property the quick subject is chosen by)."""
    tv: TaskVectorCurve | None = res.get("task_vectors")
    if tv is None:
        return []
    return [measured(
        "task vectors by layer (Hendel et al. 2023): each task's mean final-token residual of its few-shot prompts, "
        "in place of a zero-shot prompt's at one layer's input; zero-shot accuracy by layer, training (held-out) tasks",
        ", ".join(f"L{layer} {a:.2f} ({h:.2f})" for layer, a, h in zip(tv.layers, tv.train, tv.held_out))
        + f"; unpatched zero-shot {tv.zero_shot:.2f}, few-shot {tv.few_shot:.2f}; peak at L{tv.best_layer}",
        "Hendel et al. 2023; Yang et al. 2025 (task vectors in small transformers trained from scratch)",
        {"task_vector_best_accuracy": tv.best, "task_vector_best_layer": tv.best_layer,
         **{f"task_vector_L{layer}_accuracy": a for layer, a in zip(tv.layers, tv.train)},
         **{f"task_vector_L{layer}_held_out_accuracy": h for layer, h in zip(tv.layers, tv.held_out)}})]


def patching_claims(res: dict[str, Any]) -> list[Claim]:
    """Where k sits by residual-stream patching (measured: iclab's added evidence, not one of the paper's tests)."""
    dp: DemoPatching | None = res.get("demo_patching")
    if dp is None or dp.patching is None:
        return [] if dp is None else [measured("activation patching of the demonstrations", "not run: no prompt kept its "
                                               "token count when labelled by another k", "iclab", {})]
    share = dp.label_share()
    final = np.nan_to_num(dp.patching.normalised[:, -1])
    carried = next((layer for layer, v in enumerate(final) if v >= 0.5), None)
    p = dp.patching
    return [measured(
        "activation patching of the residual stream (denoising: the demonstrations labelled by another k, one layer's "
        "residual at one position restored from the right prompt; logit difference between the two tasks' answers): the "
        "label tokens' share of the effect at the demonstrations' positions, by layer input (at L0 only the labels differ, "
        "so 1 there is by construction), and the first layer whose input at the final token alone restores half the gap",
        ", ".join(f"L{layer} {v:.2f}" for layer, v in enumerate(share)) + "; final token: "
        + ("only the final residual" if carried == len(share) else f"from layer {carried}'s input" if carried is not None
           else "no layer") + f" ({p.n_pairs} prompts, clean {p.clean_metric:+.2f}, "
        f"corrupted {p.corrupted_metric:+.2f})", f"iclab's patching evidence for {HU}, section 5 (signals from label tokens)",
        {"patching_label_share_first_layer": share[0] if share else None,
         "patching_label_share_max": float(np.nanmax(share)) if share else None,
         "patching_final_token_layer": carried})]


def scan_findings(cfg: AddKStudySettings, scan: CleanScan) -> list[Claim]:
    """The clean accuracy scan over prompt formats and shots, as a MEASURED claim."""
    best = scan.best()
    table = "; ".join(f"{r.format} {r.shots}-shot {r.accuracy:.2f}" for r in scan.rows.values())
    main = scan.rows.get(f"{cfg.prompt_format}/{max(cfg.scan_shots)}")
    per_k = ", ".join(f"k={k}: {a:.2f}" for k, a in main.per_k.items()) if main else "-"
    # the statement names only settings: claims are matched across seeds by it, and the answers' length is measured
    return [measured(f"clean accuracy by prompt format and shots (tasks k = {cfg.scan_ks}, {cfg.scan_per_task} prompts each, "
                     "greedy with the key/value cache)",
                     f"{table}. Best: {best.format} {best.shots}-shot {best.accuracy:.2f} (answers of {best.answer_tokens:.1f} "
                     f"tokens on average); by k ({cfg.prompt_format}, {max(cfg.scan_shots)}-shot): {per_k}",
                     f"{HU}; formats from the authors' code (Todd et al.'s prefixes)",
                     {f"scan_{r.format}_{r.shots}shot_accuracy": r.accuracy for r in scan.rows.values()})]


def _mean(values) -> float:
    return float(np.mean(list(values)))


def head_claims(cfg: AddKStudySettings, res: dict[str, Any], why: Why) -> list[Claim]:
    """Hu et al.'s sections 4-5 on the analysed heads (the main heads, else the selected), one claim each over all of
    them: a verdict holds when it holds for every head; the words give each head's numbers, the values the weakest
    head's (or the heads' mean for a measurement), named without the heads, which differ between seeds."""
    sub: Subspaces = res["subspaces"]
    sc: SelfCorrection = res["self_correction"]
    t, heads = cfg.thresholds, sub.heads
    if not heads:
        return [Claim(c, Verdict.NOT_APPLICABLE, "no head was analysed", f"{HU}, sections 4-5") for c in (SUBSPACE, LABELS, SELF_CORRECTION)]
    centred = {h: s.mod_fit.r2_centred for h, s in heads.items()}
    weakest = {h: min(c, key=c.get) for h, c in centred.items()}
    joint = {h: s.mod_fit.r2 for h, s in heads.items()}
    targets = list(next(iter(joint.values())))
    claims = [measured(
        "the main heads: dimensions and periodic structure of their task means",
        "; ".join(f"head {h}: {s.pcs_to_95} PCs for 95% of task-mean variance (paper: 6); the authors' joint fit of the six "
                  "periodic targets on the top 6 PCs, R^2 " + ", ".join(f"{n} {v:.2f}" for n, v in joint[h].items())
                  + " (targets centred, iclab's: " + ", ".join(f"{n} {v:.2f}" for n, v in centred[h].items())
                  + "); iclab's one-PC-one-feature view, best per PC: "
                  + ", ".join(f"{pc} {name} {v.r2:.2f}" for pc, (name, v) in s.best_fits().items()) for h, s in heads.items()),
        f"{HU}, section 4",
        {"pcs_to_95_mean": _mean(s.pcs_to_95 for s in heads.values()),
         **{f"joint_fit_r2_{n}_mean": _mean(joint[h].get(n, np.nan) for h in heads) for n in targets},
         **{f"joint_fit_r2_centred_{n}_mean": _mean(centred[h].get(n, np.nan) for h in heads) for n in targets}})]
    ok = all(s.pcs_to_95 <= t.max_subspace_dims and centred[h][weakest[h]] >= t.min_periodic_r2 for h, s in heads.items())
    claims.append(Claim(
        SUBSPACE, Verdict.of(ok),
        "; ".join(f"head {h}: {s.pcs_to_95} PCs for 95% of the variance, weakest of the six targets {weakest[h]}, R^2 "
                  f"{centred[h][weakest[h]]:.2f}" for h, s in heads.items())
        + " (the joint fit on the top 6 PCs, targets centred: the authors' R^2 keeps each target's mean over k, which no "
        "centred coordinate can fit)", f"{HU}, section 4",
        {"thresholds.max_subspace_dims": t.max_subspace_dims, "thresholds.min_periodic_r2": t.min_periodic_r2}, why=why,
        values={"most_pcs_to_95": max(s.pcs_to_95 for s in heads.values()),
                "weakest_periodic_r2": min(centred[h][weakest[h]] for h in heads)}))
    claims.append(Claim(
        LABELS, Verdict.of(all(s.signal_label_share > t.min_label_share for s in heads.values())),
        "; ".join(f"head {h}: {s.signal_label_share:.0%} of its extracted signal and {s.attention_label_share:.0%} of its "
                  f"attention from label tokens; aggregation/extraction identity holds to relative error "
                  f"{s.identity_relative_error:.1e}" for h, s in heads.items()),
        f"{HU}, section 5", {"thresholds.min_label_share": t.min_label_share}, why=why,
        values={"least_label_signal_share": min(s.signal_label_share for s in heads.values()),
                "least_label_attention_share": min(s.attention_label_share for s in heads.values())}))
    routed = {h: s.signal_routing for h, s in heads.items() if s.signal_routing}
    if routed:
        claims.append(measured(
            "the main heads: the authors' section-5 readings of their per-demonstration signals s_i = O V z at the labels",
            "; ".join(f"head {h}: label peaking ratio {sr.peaking_ratio:.1f}x; signal cosine with h_k in its 6-D subspace "
                      f"{_ci(sr.signal_cosine)}, in the full stream {_ci(sr.ondemo_cosine)}; routing Pearson(alpha_i, "
                      f"cos(s_i, h_k)) {_ci(sr.routing)} vs shuffled {_ci(sr.routing_null)}; weighting gain "
                      f"{_ci(sr.weighting_gain, '+.3f')} vs shuffled {_ci(sr.weighting_gain_null, '+.3f')}"
                      for h, sr in routed.items()), f"{HU}, section 5 (utils/signals.py)",
            {"label_peaking_ratio_mean": _mean(sr.peaking_ratio for sr in routed.values()),
             "signal_cosine_mean": _mean(sr.signal_cosine.mean for sr in routed.values()),
             "routing_mean": _mean(sr.routing.mean for sr in routed.values()),
             "routing_shuffled_mean": _mean(sr.routing_null.mean for sr in routed.values()),
             "weighting_gain_mean": _mean(sr.weighting_gain.mean for sr in routed.values())}))
        wrong = {h: heads[h].wrong_first_demo for h in routed}
        claims.append(measured(
            f"the main heads: a wrong first demonstration (label + {cfg.corrupt_offset}) read through the extraction identity",
            "; ".join(f"head {h}: its signal's cosine with h_k {w.signal_cosine_clean:.2f} clean -> {w.signal_cosine_wrong:.2f} "
                      f"wrong; its share of the label attention {w.attention_share_clean:.2f} -> {w.attention_share_wrong:.2f}; "
                      f"the head's output at the final token, cosine with h_k {w.output_cosine_clean:.2f} -> "
                      f"{w.output_cosine_wrong:.2f}" for h, w in wrong.items()), f"{HU}, section 5 (self-correction)",
            {"wrong_first_signal_cosine_clean_mean": _mean(w.signal_cosine_clean for w in wrong.values()),
             "wrong_first_signal_cosine_mean": _mean(w.signal_cosine_wrong for w in wrong.values()),
             "wrong_first_output_cosine_clean_mean": _mean(w.output_cosine_clean for w in wrong.values()),
             "wrong_first_output_cosine_mean": _mean(w.output_cosine_wrong for w in wrong.values())}))
    corr = {h: s.successive_signal_correlation for h, s in heads.items()}
    ok = all(c < t.max_successive_correlation for c in corr.values()) and sc.first_wrong >= sc.last_wrong - t.correction_tolerance
    claims.append(Claim(
        SELF_CORRECTION, Verdict.of(ok),
        ", ".join(f"head {h}: r = {c:+.2f}" for h, c in corr.items())
        + f"; accuracy {sc.first_wrong:.2f} with the first wrong vs {sc.last_wrong:.2f} with the last",
        f"{HU}, section 5", {"thresholds.max_successive_correlation": t.max_successive_correlation,
                             "thresholds.correction_tolerance": t.correction_tolerance}, why=why,
        values={"largest_successive_signal_correlation": max(corr.values())}))
    projected: Projection | None = res.get("projection")
    if projected and projected.heads:
        arms = list(dict.fromkeys(a for pr in projected.heads.values() for a in pr.accuracy))
        claims.append(measured(
            "the main heads: projection causal test (zero-shot accuracy of each head's task-mean result at c*, whole or "
            "projected on its mod-vector subspaces)",
            "; ".join(f"head {h} (c* = {pr.c_star:g}): " + ", ".join(f"{arm} {v:.2f}" for arm, v in pr.accuracy.items())
                      for h, pr in projected.heads.items()), f"{HU}, appendix F (run_projection_causal)",
            {f"projection_accuracy_{arm}_mean": _mean(pr.accuracy.get(arm, np.nan) for pr in projected.heads.values())
             for arm in arms}))
    return claims


def not_applicable(cfg: AddKStudySettings, clean: CleanAccuracy, name: str) -> list[Claim]:
    """Every localisation claim marked NOT APPLICABLE: below ``min_clean_accuracy`` there is no behaviour to localise."""
    why = (f"{name} solves {cfg.task.shots}-shot add-k in the {cfg.prompt_format} format only {clean.train_tasks:.2f} of the "
           "time; head sets found on a task the model does not do would mean nothing")
    return [Claim(claim, Verdict.NOT_APPLICABLE, why, HU, {"min_clean_accuracy": cfg.min_clean_accuracy}) for claim in LOCALISATION]


def findings(cfg: AddKStudySettings, res: dict[str, Any]) -> tuple[list[Claim], dict[str, Any]]:
    """The claims and numbers of a localised model, or, below ``min_clean_accuracy``, its accuracy and NOT APPLICABLE."""
    clean, scan = res["clean_accuracy"], res.get("clean_scan")
    if "localisation" not in res:
        claims = [measured("clean few-shot exact-match accuracy", f"{cfg.task.shots}-shot, {cfg.prompt_format} format: "
                           f"{clean.train_tasks:.2f} on training tasks, {clean.held_out_tasks:.2f} on held-out tasks", HU,
                           _clean_values(clean))]
        claims += (scan_findings(cfg, scan) if scan else []) + task_vector_claims(res) + not_applicable(cfg, clean, res["model"])
        return claims, {"model": res["model"], "clean_accuracy": clean.train_tasks, "clean_accuracy_held_out": clean.held_out_tasks,
                        "clean_scan": scan.rows if scan else None, "localised": False}
    claims, numbers = localised(cfg, res)
    if scan:
        claims += scan_findings(cfg, scan)
        numbers["clean_scan"] = scan.rows
    return claims, numbers
