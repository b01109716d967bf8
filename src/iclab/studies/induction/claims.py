"""The induction study's claims: Olsson et al.'s lines of evidence as typed claims, and the summary numbers."""

from __future__ import annotations

from typing import Any

import numpy as np

from iclab.analysis.circuits import Mechanism
from iclab.analysis.induction.phase_change import PhaseChange, Window
from iclab.analysis.induction.runs import Ablations, Attribution, TextAttribution, Trajectory
from iclab.analysis.induction.scores import InductionHead
from iclab.claims import Claim, Verdict, Why, at_scale, measured, plural, recipe
from iclab.studies.induction.llc import llc_claims
from iclab.studies.induction.settings import InductionStudySettings, model_shape


def _fmt_window(w: Window | None) -> str:
    return "none" if w is None else f"{w.start_tokens:.3g}-{w.end_tokens:.3g} tokens ({w.share_of_final:.0%} of the change)"


OLSSON = "Olsson et al. 2022"


def budget(cfg: InductionStudySettings, traj: dict[str, Trajectory], m: str, reading: str = "") -> Why:
    """Why a claim on model ``m`` may not hold: its width and training tokens against Olsson et al.'s (``reading``: what
    the measurement adds, said first)."""
    here = f"{m} is {cfg.recipe.d_model} wide, trained on {float(traj[m].tokens[-1]):.3g} tokens"
    why = at_scale(here, "768 wide, billions of tokens of text", cfg.recipe.d_model < 768)
    return Why(why.differs_by, f"{reading}; {why.text}" if reading else why.text)


def findings(cfg: InductionStudySettings, res: dict[str, Any]) -> tuple[list[Claim], dict[str, Any]]:
    traj: dict[str, Trajectory] = res["trajectories"]
    pc: dict[str, PhaseChange] = res["phase_change"]
    heads: dict[str, list[InductionHead]] = res["heads"]
    abl: dict[str, Ablations] = res["ablations"]
    t = cfg.thresholds
    icl = {m: float(traj[m].icl_score("mixture")[-1]) for m in cfg.models}
    icl_nat = {m: float(traj[m].icl_score("natural")[-1]) for m in cfg.models}
    drop = {m: abl[m].drop for m in cfg.models}
    claims: list[Claim] = []
    plain = [m for m in cfg.models if not m.startswith("smeared")]  # attention-only, and with MLPs
    multi = [m for m in plain if model_shape(m)[0] >= 2]
    for m in multi:
        w = pc[m].window
        in_late = [h for h in heads[m] if h.head.layer >= 1]
        prev = traj[m].final("previous_token")
        prev_best = float(prev[:-1].max()) if len(prev) > 1 else float("nan")
        ok = w is not None and w.share_of_final >= t.window_share and bool(in_late) and prev_best >= t.previous_token
        claims.append(Claim(
            f"{m} shows a phase change with induction heads after the first layer and a previous-token head before them", Verdict.of(ok),
            f"window {_fmt_window(w)}; induction heads {', '.join(str(h.head) for h in heads[m]) or 'none'}, last layer "
            f"{model_shape(m)[0] - 1}; best earlier-layer previous-token score {prev_best:.2f}; trained on {traj[m].tokens[-1]:.3g} tokens",
            f"{OLSSON}, argument 1 (co-occurrence)", {"thresholds.window_share": t.window_share, "thresholds.previous_token": t.previous_token,
                                                       "induction_threshold": cfg.induction_threshold,
                                                       "induction_copying_top1": cfg.induction_copying_top1, "min_icl_change": cfg.min_icl_change},
            why=budget(cfg, traj, m, "no phase change within this budget is a statement about the budget" if w is None else ""),
            values={f"{m}_window_share": None if w is None else w.share_of_final, f"{m}_n_induction_heads_after_layer0": len(in_late),
                    f"{m}_best_previous_token": prev_best}))
    for m in cfg.models:  # every model whose ICL score changed enough to have a window
        w = pc[m].window
        if w is None:
            continue
        claims.append(Claim(
            f"more than 75% of {m}'s final ICL score forms in the phase-change window", Verdict.of(w.share_of_final > t.paper_window_share),
            f"{w.share_of_final:.0%} in {_fmt_window(w)}; the window is where the rate of change stays above {cfg.window_level} of its peak",
            OLSSON, {"thresholds.paper_window_share": t.paper_window_share},
            why=budget(cfg, traj, m, f"the other {1 - w.share_of_final:.0%} came gradually, before and after the window (in-context "
                       "token frequencies need no induction head)"),
            values={f"{m}_window_start_tokens": w.start_tokens, f"{m}_window_end_tokens": w.end_tokens}))
        bump, rise = pc[m].bump_tokens, pc[m].rise_tokens
        claims.append(Claim(
            f"{m}'s held-out loss has a bump near its phase change (a non-convex stretch vs log tokens)", Verdict.of(bump is not None),
            f"{'%.3g-%.3g tokens' % tuple(bump) if bump else 'none found'}; an outright rise: {'%.3g-%.3g tokens' % tuple(rise) if rise else 'none'}",
            OLSSON, why=budget(cfg, traj, m, f"the held-out loss is read at {len(traj[m].tokens)} snapshots; a bump narrower "
                                                "than their spacing cannot show"),
            values={f"{m}_bump_start_tokens": bump[0] if bump else None, f"{m}_bump_end_tokens": bump[1] if bump else None}))
    if "attn1" in cfg.models:
        claims.append(Claim(
            "the 1-layer attention-only model forms no induction head", Verdict.of(not heads["attn1"]),
            f"best prefix-matching {traj['attn1'].final('prefix_matching').max():.2f}; ICL score {icl['attn1']:.2f} nats", OLSSON,
            {"induction_threshold": cfg.induction_threshold, "induction_copying_top1": cfg.induction_copying_top1},
            why=recipe(f"an induction head here is a behavioural score (prefix matching >= {cfg.induction_threshold}, copying "
                       f"top-1 > {cfg.induction_copying_top1}), not a circuit: a 1-layer head that passes it does so without "
                       "K-composition"),
            values={"attn1_best_prefix_matching": float(traj["attn1"].final("prefix_matching").max()),
                    "attn1_n_induction_heads": len(heads["attn1"])}))
        w = pc["attn1"].window
        claims.append(Claim(
            "the 1-layer attention-only model has no phase change", Verdict.of(w is None),
            f"window {_fmt_window(w)}; what ICL score it has, it gains gradually: in-context token frequencies, skip-trigrams", OLSSON,
            why=recipe(f"iclab's window is any stretch where the ICL score's rate of change stays above {cfg.window_level} of its "
                       f"peak and that gains at least {cfg.min_icl_change} nats; a gradual gain from in-context token "
                       "frequencies makes one too, where Olsson et al. judge the curve's shape by eye"),
            values={"attn1_icl_score": icl["attn1"]}))
    if "smeared1" in cfg.models:
        claims.append(Claim(
            "smeared keys give a 1-layer model induction heads", Verdict.of(bool(heads["smeared1"])),
            f"{', '.join(f'{h.head} {h.prefix_matching:.2f}' for h in heads['smeared1']) or 'none'}; ICL score {icl['smeared1']:.2f} vs "
            f"{icl.get('attn1', float('nan')):.2f} without", f"{OLSSON}, argument 2 (architectural co-perturbation)",
            why=budget(cfg, traj, "smeared1"), values={"smeared1_n_induction_heads": len(heads["smeared1"]), "smeared1_icl_score": icl["smeared1"]}))
    if "smeared2" in cfg.models and "attn2" in cfg.models:
        ws, wp = pc["smeared2"].window, pc["attn2"].window
        claims.append(Claim(
            "smeared keys move the 2-layer phase change earlier", Verdict.of(ws is not None and (wp is None or ws.start_tokens < wp.start_tokens)),
            f"smeared2 {_fmt_window(ws)}; attn2 {_fmt_window(wp)}", f"{OLSSON}, argument 2", why=budget(cfg, traj, "smeared2"),
            values={"smeared2_window_start_tokens": None if ws is None else ws.start_tokens,
                    "attn2_window_start_tokens": None if wp is None else wp.start_tokens}))
    for m in cfg.models:
        if drop[m] is not None and heads[m]:
            claims.append(Claim(
                f"ablating {m}'s induction heads (attention patterns preserved) removes most of its ICL score",
                Verdict.of(drop[m] > t.ablation_drop), f"{drop[m]:.0%}; {abl[m].clean:.2f} -> {abl[m].induction_heads_ablated:.2f} nats",
                f"{OLSSON}, argument 3 (direct ablation)", {"thresholds.ablation_drop": t.ablation_drop}, why=budget(cfg, traj, m),
                values={f"{m}_ablation_icl_drop": drop[m], f"{m}_icl_score_ablated": abl[m].induction_heads_ablated}))
    for m in cfg.models:
        if heads[m]:
            ids = {h.head for h in heads[m]}
            zero = np.array(abl[m].per_head["pattern_preserving"])
            others = [zero[layer, h] - abl[m].clean for layer in range(zero.shape[0]) for h in range(zero.shape[1]) if (layer, h) not in ids]
            if others:
                claims.append(measured(f"ablating {m}'s other heads one at a time (paper: other heads slightly increase ICL when ablated)",
                                       f"ICL score changes by {np.mean(others):+.3f} nats on average; {float(np.mean(np.array(others) < 0)):.0%} "
                                       "of them make it more negative", OLSSON,
                                       {f"{m}_other_heads_mean_icl_change": float(np.mean(others))}))
    mechanisms: dict[str, Mechanism] = res["mechanism"]
    for m, mech in mechanisms.items():  # one claim per model over all its induction heads: which heads a seed finds varies
        if not mech.heads:
            continue
        found = plural(len(mech.heads), "induction head")
        composes = [h.k_best_earlier_head == h.previous_token_head for h in mech.heads]
        claims.append(Claim(
            f"{m}'s induction heads' QK circuits K-compose with the previous-token head (each more than with any other "
            "earlier head)", Verdict.of(all(composes)),
            f"{sum(composes)} of {found}: " + "; ".join(
                f"{h.head} from previous-token head {h.previous_token_head} {h.k_from_previous_token_head:.3f}, other "
                f"earlier heads {h.k_mean_other_earlier:.3f} on average" for h in mech.heads)
            + f"; random rank-d_head maps {mech.chance:.3f}", f"{OLSSON}, argument 4 (mechanistic plausibility); Elhage et al. 2021",
            why=budget(cfg, traj, m), values={f"{m}_k_composition_previous_token_head": min(h.k_from_previous_token_head for h in mech.heads),
                                              f"{m}_k_composition_other_heads": max(h.k_mean_other_earlier for h in mech.heads)}))
        copying = [h.ov_copying > 0 and h.qk_prefix_matching > 0 for h in mech.heads]
        claims.append(Claim(
            f"{m}'s induction heads copy and prefix-match by their weights: positive eigenvalues of each one's OV circuit and "
            "of its QK circuit composed with the previous-token head", Verdict.of(all(copying)),
            f"{sum(copying)} of {found}: " + "; ".join(
                f"{h.head} OV eigenvalue positivity {h.ov_copying:+.2f}, K-composed QK {h.qk_prefix_matching:+.2f}" for h in mech.heads)
            + " (sum of eigenvalues over their absolute sum; 1: all positive)", f"{OLSSON}, argument 4", why=budget(cfg, traj, m),
            values={f"{m}_ov_copying": min(h.ov_copying for h in mech.heads),
                    f"{m}_qk_prefix_matching": min(h.qk_prefix_matching for h in mech.heads)}))
    claims.append(_attribution_claim(cfg, res.get("attribution"), icl_nat, traj))
    claims.append(measured("final ICL score (nats, late minus early token loss) on held-out mixture / held-out stdlib text",
                           ", ".join(f"{m} {icl[m]:.2f} / {icl_nat[m]:.2f}" for m in cfg.models), OLSSON,
                           {**{f"{m}_icl_score": icl[m] for m in cfg.models}, **{f"{m}_icl_score_text": icl_nat[m] for m in cfg.models}}))
    claims += llc_claims(cfg, res)
    numbers = {
        "icl_score": icl,
        "icl_score_natural": icl_nat,
        "phase_change": {m: (None if pc[m].window is None else {"start_tokens": pc[m].window.start_tokens,
                                                                "end_tokens": pc[m].window.end_tokens}) for m in cfg.models},
        "induction_heads": heads,
        "ablation_icl_drop": drop,
    }
    if res.get("attribution"):
        a: Attribution = res["attribution"]
        keep = ("component", "explained", "mean_delta_predictable", "mean_delta_other", "n_predictable", "p_value")
        numbers["token_attribution"] = {"model": a.model, "before_step": a.before_step, "after_step": a.after_step,
                                        **{name: {k: getattr(getattr(a, name), k) for k in keep} for name in ("natural", "mixture")}}
    return claims, numbers


def _attribution_claim(cfg: InductionStudySettings, a: Attribution | None, icl_natural: dict[str, float],
                       traj: dict[str, Trajectory]) -> Claim:
    statement = ("across the phase change, the tokens an induction head can predict (their bigram occurred earlier in the text) "
                 "gain the most: per-token loss change on held-out text")
    source = f"{OLSSON}, per-token loss analysis (argument 1)"
    if a is None:
        return Claim(statement, Verdict.NOT_APPLICABLE, "no multi-layer model has a phase-change window", source)
    text, mix = a.natural, a.mixture
    p = text.p_value

    def gain(r: TextAttribution) -> str:
        pred = "n/a" if r.mean_delta_predictable is None else f"{r.mean_delta_predictable:+.2f}"
        other = "n/a" if r.mean_delta_other is None else f"{r.mean_delta_other:+.2f}"
        p_text = "n/a" if r.p_value is None else f"{r.p_value:.1e}"
        return (f"mean loss change {pred} nats on {r.n_predictable} predictable tokens vs {other} on the "
                f"rest (one-sided Welch p = {p_text}); phase-change direction = principal component {r.component + 1} "
                f"({r.explained:.0%} of the variance)")

    return Claim(statement, Verdict.of(p is not None and p < cfg.thresholds.attribution_p),
                 f"{a.model}, snapshots {a.before_step} -> {a.after_step}. Stdlib text: {gain(text)}. Held-out training "
                 f"mixture, for comparison: {gain(mix)}. Tokens of one sequence are not independent. Coloured text in "
                 "figures/token_loss_attribution.html", source, {"thresholds.attribution_p": cfg.thresholds.attribution_p},
                 values={"attribution_p_value": p, "attribution_loss_change_predictable": text.mean_delta_predictable,
                         "attribution_loss_change_other": text.mean_delta_other},
                 why=budget(cfg, traj, a.model, f"{cfg.recipe.natural_share:.0%} of the training tokens are text; {a.model}'s "
                            f"final ICL score on held-out text is {icl_natural[a.model]:+.2f} nats (the paper's models "
                            "are trained on text)"))
