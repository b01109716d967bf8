"""The induction study on a pretrained language model (``iclab run induction --model NAME_OR_PATH``).

Wires :mod:`iclab.analysis.induction.evidence`: scores every head, measures in-context learning on natural text and
on repeated random tokens, ablates the top induction heads against heads drawn at random from the same layers
(zero and mean ablation), and patches: which heads and positions restore the second-copy prediction when the first
copy is corrupted (:mod:`iclab.analysis.patching`). No training; every analysis is a cached part. Same settings as
the study (``pretrained``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from iclab.analysis.induction import evidence as E
from iclab.analysis.induction.runs import AttentionExample
from iclab.analysis.induction.scores import score_heads
from iclab.analysis.lens import PromptAttention, prompt_attention
from iclab.analysis.patching import Patching, SetPatching, agreement, patch, patch_heads
from iclab.claims import Claim, Verdict, measured, subject
from iclab.heads import HeadModel, load_model
from iclab.pretrained import check_spec
from iclab.results import Head, Result
from iclab.plots.induction_lm import plot_all
from iclab.studies.common import generator
from iclab.studies.runner import Context, Part, Study


@dataclass(frozen=True)
class HeadScores(Result):
    """Every head's scores, name -> [L][H] (:func:`iclab.analysis.induction.scores.score_heads`)."""

    SCHEMA: ClassVar[int] = 2  # 2: with the copying rank

    scores: dict[str, list[list[float]]]

    def of(self, name: str) -> np.ndarray:
        return np.array(self.scores[name])


@dataclass(frozen=True)
class TextICL(Result):
    """The ICL score on text and its mean loss per position, and the losses on the two copies of repeated random tokens."""

    SCHEMA: ClassVar[int] = 1

    icl_score: float
    loss_by_position: list[float]
    first_copy_loss: float
    second_copy_loss: float


@dataclass(frozen=True)
class HeadAblations(Result):
    """The ablated head sets (the induction heads and the random controls) and each set's effect per mode."""

    SCHEMA: ClassVar[int] = 1

    heads: dict[str, list[Head]]
    effects: dict[str, dict[str, E.AblationEffect]]


def head_scores(model: HeadModel, cfg) -> HeadScores:
    p = cfg.pretrained
    scores = score_heads(model, generator(cfg.seed, "lm_head_scores"), length=p.probe_length, repeats=p.probe_repeats, batch=p.probe_batch)
    return HeadScores({k: v.tolist() for k, v in scores.items()})


def attention_example(model: HeadModel, cfg, head: Head) -> AttentionExample:
    probe = E.InductionProbe.make(model, 1, cfg.pretrained.probe_length, generator(cfg.seed, "lm_example"))
    pattern = model.patterns(probe.ids)[head.layer, 0, head.head]
    return AttentionExample(str(cfg.model), head, probe.ids[0].tolist(), pattern.tolist())


def icl_on_text(model: HeadModel, cfg, text: torch.Tensor, probe: E.InductionProbe) -> TextICL:
    losses = E.token_losses(model, text, batch=cfg.pretrained.batch)
    score, curve = E.text_icl(losses)
    first, second = probe.copy_losses(E.token_losses(model, probe.ids, batch=cfg.pretrained.batch))
    return TextICL(score, curve, first, second)


def ablations(model: HeadModel, cfg, heads: list[Head], text: torch.Tensor, probe: E.InductionProbe) -> HeadAblations:
    p = cfg.pretrained
    g = generator(cfg.seed, "lm_random_heads")
    sets = {"induction": heads, **{f"random{i}": E.random_heads_like(heads, model.n_heads, g, model.n_layers)
                                   for i in range(p.random_draws)}}
    z_mean = E.mean_head_z(model, text, p.batch)
    return HeadAblations(sets, E.ablation_effects(model, sets, ("zero", "mean"), z_mean, text, probe, p.batch))


@dataclass(frozen=True)
class RepeatPatching(Result):
    """Denoising patching on repeated random tokens against the same with the first copy corrupted (metric: the
    answer's log-probability): ``heads`` exact, each head at every position at once ([L, H]); ``positions`` attribution
    patching, each head at each position ([L, H, T]); ``sets`` the ablation part's head sets (the induction heads and
    the random draws from their layers) each patched together."""

    SCHEMA: ClassVar[int] = 1

    heads: Patching
    positions: Patching
    sets: dict[str, SetPatching]


def repeat_patching(model: HeadModel, cfg, head_sets: dict[str, list[Head]]) -> RepeatPatching:
    p = cfg.pretrained
    pairs = E.first_copy_corrupted_pairs(model, p.patching_pairs, p.probe_length, generator(cfg.seed, "lm_patching"))
    return RepeatPatching(patch(model, pairs, "heads", "logprob", positions="all"),
                          patch(model, pairs, "heads", "logprob", method="attribution"),
                          {name: patch_heads(model, pairs, heads, "logprob") for name, heads in head_sets.items()})


def repeat_attention(model: HeadModel, cfg) -> PromptAttention:
    """Every head's attention on the first patching pair's clean prompt (the live view in the report)."""
    p = cfg.pretrained
    [pair] = E.first_copy_corrupted_pairs(model, 1, p.probe_length, generator(cfg.seed, "lm_patching"))
    return prompt_attention(model, torch.tensor(pair.clean))


def patching_claims(res: dict[str, Any], heads: list[Head]) -> list[Claim]:
    """What patching says about the induction heads (measured: Olsson et al. did not patch; iclab's added evidence)."""
    rp: RepeatPatching = res["patching"]
    exact = rp.heads.normalised  # [L, H]
    k = len(heads)
    order = [Head(*np.unravel_index(i, exact.shape)) for i in np.argsort(-exact, axis=None)]
    overlap = len(set(order[:k]) & set(heads))
    per_head = rp.positions.effect  # [L, H, T]
    summed = Patching(rp.positions.site, rp.positions.direction, rp.positions.metric, "attribution", rp.positions.n_pairs,
                      rp.positions.tokens, rp.positions.clean_metric, rp.positions.corrupted_metric, per_head.sum(-1),
                      rp.positions.stderr.sum(-1), rp.positions.normalised.sum(-1))
    agree = agreement(rp.heads, summed, k=k)
    last = [abs(per_head[h][-1]) / max(abs(per_head[h]).sum(), 1e-12) for h in heads]
    together = rp.sets["induction"]
    random_sets = [v.normalised for k, v in rp.sets.items() if k.startswith("random")]
    return [
        measured(f"activation patching of the top {k} induction heads together (each at every position, first copy corrupted): "
                 "the share of the second-copy prediction they restore, against as many random heads of the same layers "
                 "(the patching counterpart of the ablation test)",
                 f"{together.normalised:+.2f} (+- {together.stderr / max(abs(rp.heads.clean_metric - rp.heads.corrupted_metric), 1e-12):.2f}) vs "
                 f"random sets {np.mean(random_sets):+.2f} +- {np.std(random_sets):.2f} over {len(random_sets)} draws",
                 f"iclab's patching evidence for {OLSSON}'s induction heads",
                 {"patching_induction_set_restores": together.normalised,
                  "patching_random_sets_restore": float(np.mean(random_sets)) if random_sets else None}),
        measured("activation patching on repeated random tokens (denoising: the run with the first copy replaced by other "
                 "random tokens, one head's output at every position taken from the clean run; share of the answer's "
                 "log-probability gap restored): the heads that restore the most",
                 ", ".join(f"{h} {exact[h]:+.2f}" for h in order[:5]) + f"; {overlap} of the top {k} induction heads are "
                 f"among the top {k} here (clean {rp.heads.clean_metric:.2f}, corrupted {rp.heads.corrupted_metric:.2f} "
                 f"nats, {rp.heads.n_pairs} pairs)", f"iclab's patching evidence for {OLSSON}'s induction heads",
                 {"patching_best_head_restores": float(exact[order[0]]), "patching_top_k_overlap": overlap,
                  "patching_induction_heads_mean_restore": float(np.mean([exact[h] for h in heads])) if heads else None}),
        measured("attribution patching of each head at each position: the induction heads' effect at the last position "
                 "(where they attend from) as a share of their effect over all positions; and attribution summed over "
                 "positions against exact patching of whole heads",
                 ", ".join(f"{h} {v:.2f}" for h, v in zip(heads, last)) + f"; correlation {agree.correlation:.2f}, "
                 f"{agree.top_k_shared} of the top {k} heads shared", f"iclab's patching evidence for {OLSSON}",
                 {"patching_last_position_share_mean": float(np.mean(last)) if last else None,
                  "patching_attribution_correlation": agree.correlation}),
    ]


OLSSON = "Olsson et al. 2022"


def findings(cfg, res: dict[str, Any]) -> tuple[list[Claim], dict[str, Any]]:
    p, name = cfg.pretrained, res["model"]
    scores: HeadScores = res["scores"]
    icl: TextICL = res["icl"]
    abl: HeadAblations = res["ablations"]
    pm, eig = scores.of("prefix_matching"), scores.of("copying_eigenvalues")
    heads: list[Head] = res["induction_heads"]
    n_ind = int((pm >= cfg.induction_threshold).sum())
    claims = [Claim(
        f"{name} has induction heads (large trained language models do)", Verdict.of(n_ind > 0),
        f"{n_ind} heads with prefix-matching >= {cfg.induction_threshold}; best "
        + ", ".join(f"{h} {pm[h]:.2f}" for h in heads),
        f"{OLSSON}, argument 1 and the prefix-matching score", {"induction_threshold": cfg.induction_threshold},
        why=subject(f"{name} is a pretrained model of its own size and data; Olsson et al. found induction heads in every "
                    "model they trained of more than one layer, not in every model there is"),
        values={"n_induction_heads": n_ind, "best_prefix_matching": float(pm.max())})]
    claims.append(measured(
        "eigenvalue copying score of those heads (sum of the OV circuit's eigenvalues over their absolute sum, read off the "
        "weights from the token embeddings; in a deep model a head reads the residual stream, so this is a rough guide)",
        ", ".join(f"{eig[h]:+.2f}" for h in heads) + f"; all heads: mean {eig.mean():+.2f}", OLSSON,
        {"induction_heads_mean_copying_eigenvalues": float(np.mean([eig[h] for h in heads])) if heads else None}))
    rank = scores.of("copying_rank")
    claims.append(measured(
        "copying rank of those heads (where the head's direct OV path ranks the token it attends to among the probe "
        "vocabulary: 1 = first, about 0.5 = no copying; iclab's measure for large vocabularies, where the specified "
        "copying score tends to -1)",
        ", ".join(f"{rank[h]:.3f}" for h in heads) + f"; all heads: median {np.median(rank):.3f}", OLSSON,
        {"induction_heads_mean_copying_rank": float(np.mean([rank[h] for h in heads])) if heads else None}))
    drop = icl.first_copy_loss - icl.second_copy_loss
    claims.append(Claim(
        f"{name} learns repeated random tokens in context", Verdict.of(drop > p.min_copy_gain),
        f"loss {icl.first_copy_loss:.2f} nats on the first copy, {icl.second_copy_loss:.2f} on the second; gain {drop:.2f}",
        OLSSON, {"pretrained.min_copy_gain": p.min_copy_gain},
        why=subject(f"{name} is a pretrained model of its own size and data, read on {p.probe_batch} probes of "
                    f"{p.probe_length} random tokens"),
        values={"first_copy_loss": icl.first_copy_loss, "second_copy_loss": icl.second_copy_loss}))
    claims.append(measured(f"ICL score on Python reference text (pydoc_data.topics, {p.text_sequences} x {p.text_length} tokens)",
                           f"{icl.icl_score:.2f} nats, loss at a late token minus an early one; negative: the context helps", OLSSON,
                           {"icl_score_text": icl.icl_score}))
    for mode in ("zero", "mean"):
        eff = abl.effects[mode]
        clean = eff["clean"]
        rise = eff["induction"].second_copy_loss - clean.second_copy_loss
        rand = [eff[k].second_copy_loss - clean.second_copy_loss for k in eff if k.startswith("random")]
        ok = rise > 0 and rise > p.ablation_ratio * max(np.mean(rand), 0.0)
        note = E.control_note(heads, [abl.heads[k] for k in abl.heads if k.startswith("random")])
        claims.append(Claim(
            f"{mode}-ablating the top {len(heads)} induction heads raises the second-copy loss far more than ablating as many random "
            "heads of the same layers", Verdict.of(ok),
            f"+{rise:.2f} nats vs {np.mean(rand):+.2f} +- {np.std(rand):.2f} over {len(rand)} draws" + (f"; {note}" if note else ""),
            f"{OLSSON}, argument 3 (ablations), here on a model with MLPs", {"pretrained.ablation_ratio": p.ablation_ratio},
            why=subject(f"{name} has MLPs and many layers; Olsson et al.'s ablations are on small attention-only models, and a "
                        f"large model can carry copying in more heads than the top {len(heads)}"),
            values={f"{mode}_ablation_second_copy_rise": rise, f"{mode}_ablation_random_second_copy_rise": float(np.mean(rand))}))
        d_icl = eff["induction"].icl_score - clean.icl_score
        r_icl = [eff[k].icl_score - clean.icl_score for k in eff if k.startswith("random")]
        claims.append(measured(f"{mode}-ablating them changes the ICL score on text (positive: less in-context learning)",
                               f"{d_icl:+.3f} nats; random heads {np.mean(r_icl):+.3f} +- {np.std(r_icl):.3f}", OLSSON,
                               {f"{mode}_ablation_icl_change": d_icl, f"{mode}_ablation_random_icl_change": float(np.mean(r_icl))}))
    claims += patching_claims(res, heads)
    numbers = {"model": name, "induction_heads": heads, "n_induction_heads": n_ind,
               "icl_score_text": icl.icl_score, "first_copy_loss": icl.first_copy_loss, "second_copy_loss": icl.second_copy_loss,
               "ablation": abl.effects}
    return claims, numbers


@dataclass
class Loaded:
    model: HeadModel
    text: torch.Tensor  # [B, T] token ids of Python reference text
    probe: E.InductionProbe


def load(ctx: Context) -> Loaded:
    cfg, p = ctx.settings, ctx.settings.pretrained
    model = load_model(cfg.model, ctx.device, log=ctx.log, max_memory=ctx.max_memory)
    text = E.natural_text_ids(model, p.text_sequences, p.text_length, generator(cfg.seed, "lm_text"))
    probe = E.InductionProbe.make(model, p.probe_batch, p.probe_length, generator(cfg.seed, "lm_probe"))
    return Loaded(model, text, probe)


def _heads(ctx: Context) -> list[Head]:
    return E.top_heads(torch.tensor(ctx.results["scores"].of("prefix_matching")), ctx.settings.pretrained.top_k)


PARTS = [
    Part("model", lambda ctx: str(ctx.settings.model), cached=False),
    Part("scores", lambda ctx: head_scores(ctx.models.model, ctx.settings), HeadScores),
    Part("induction_heads", _heads, cached=False),
    Part("icl", lambda ctx: icl_on_text(ctx.models.model, ctx.settings, ctx.models.text, ctx.models.probe), TextICL),
    Part("ablations", lambda ctx: ablations(ctx.models.model, ctx.settings, ctx.results["induction_heads"], ctx.models.text,
                                            ctx.models.probe), HeadAblations),
    Part("example", lambda ctx: attention_example(ctx.models.model, ctx.settings, ctx.results["induction_heads"][0]), AttentionExample),
    Part("patching", lambda ctx: repeat_patching(ctx.models.model, ctx.settings, ctx.results["ablations"].heads), RepeatPatching),
    Part("attention", lambda ctx: repeat_attention(ctx.models.model, ctx.settings), cached=False),  # one pass; the view's data
]


def notes(cfg) -> list[str]:
    p = cfg.pretrained
    return [
        f"Head scores on BOS + {p.probe_length} random tokens (from the model's non-special vocabulary) x {p.probe_repeats}, "
        f"{p.probe_batch} sequences.",
        f"Ablations: the top {p.top_k} heads by prefix-matching vs {p.random_draws} draws of as many heads from the same layers; zero "
        "ablation scales a head's z by 0, mean ablation writes its mean z over the text positions; at every position.",
        "Second-copy loss: mean loss over the second copy of BOS + random tokens repeated twice (first token of each copy left out).",
        "The model's weights are used as stored (for catalogue models: dequantised from 4-bit GGUF, see its manifest.json).",
        f"Patching: {p.patching_pairs} pairs of BOS + {p.probe_length} random tokens + the same tokens less the last (answer: "
        "the last), against the same with the first copy replaced by other random tokens; metric: the answer's log-probability; "
        "denoising. Exact patching takes each head's output at every position at once (alone, and the ablations' head sets "
        "together); attribution patching each head at each position.",
    ]


def _refuse_unknown(cfg) -> None:
    check_spec(cfg.model)  # a wrong --model is refused before the folder is touched


STUDY = Study("induction", {}, parts=lambda cfg: PARTS, claims=findings, figures=lambda res, cfg, folder: plot_all(res, folder),
              models=load, notes=notes, check=_refuse_unknown)
