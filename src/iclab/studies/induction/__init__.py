"""Study induction: induction heads and the in-context-learning phase change (Olsson et al. 2022).

Trains small attention-only models (plain and with smeared keys) and models with MLPs on the induction task's
mixture with log-spaced weight snapshots, scores every snapshot (ICL score, per-token losses, per-head
prefix-matching, previous-token and copying scores), finds the phase-change window and the loss bump, ablates the
final models' heads (zero, mean, pattern-preserving), reads their circuits and attributes the per-token loss change
across the window. With ``model`` set, the pretrained-model branch (:mod:`.pretrained`) runs instead. Analyses in
:mod:`iclab.analysis.induction.runs`; claims in :mod:`.claims`; settings in :mod:`.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iclab.analysis.circuits import Mechanism, induction_mechanism
from iclab.analysis.induction import runs as R
from iclab.analysis.induction.scores import InductionHead, ProbeSequences, induction_heads, make_probe_sequences
from iclab.analysis.lens import PromptAttention, prompt_attention
from iclab.heads import IclabHeadModel
from iclab.models import ModelConfig
from iclab.plots.induction import plot_all
from iclab.results import Head
from iclab.runs import RunDir, load_model
from iclab.studies.common import generator
from iclab.analysis.llc_runs import LLCTrajectory
from iclab.studies.induction import llc as LLC
from iclab.studies.induction import pretrained
from iclab.studies.induction.claims import findings
from iclab.studies.induction.settings import PRESETS, InductionStudySettings, has_mlps, model_shape
from iclab.studies.runner import Context, Entry, Part, Study
from iclab.tasks.induction import InductionTask, icl_positions, natural_sequences
from iclab.train import RunConfig, TrainConfig, train

Ctx = Context[InductionStudySettings]


def run_config(cfg: InductionStudySettings, name: str) -> RunConfig:
    r = cfg.recipe
    n_layers, smeared = model_shape(name)
    task = r.task(cfg.seed)
    model = ModelConfig(n_layers=n_layers, d_model=r.d_model, n_heads=r.n_heads, attn_only=not has_mlps(name), normalization=r.normalization,
                        positional=r.positional, smeared_keys=smeared, **task.model_io())
    train_cfg = TrainConfig.for_study(r.steps, r.batch_size, r.lr, r.warmup_steps, log_rows=200, log_floor=5, schedule=r.schedule,
                                      snapshots=r.snapshots, precision=r.precision)
    return RunConfig(task=task, model=model, train=train_cfg, seed=cfg.seed)


def probe_sequences_for(cfg: InductionStudySettings, device: torch.device | str = "cpu") -> ProbeSequences:
    """Held-out sequences (training mixture and stdlib text from files never trained on) and head-score probes."""
    task_cfg = cfg.recipe.task(cfg.seed)
    mixture = InductionTask(task_cfg).batch(0, cfg.eval_sequences, "eval").inputs
    natural = natural_sequences(task_cfg, cfg.eval_sequences, "eval", generator(cfg.seed, "natural"))
    vocab = torch.arange(task_cfg.synthetic_vocab)  # span tokens: the random-token probes use the same alphabet
    p = make_probe_sequences({"mixture": mixture, "natural": natural}, vocab, generator(cfg.seed, "probes"), length=cfg.probe_length,
                             repeats=cfg.probe_repeats, batch=cfg.probe_batch, n_loss_positions=cfg.loss_positions)
    p.sequences = {k: v.to(device) for k, v in p.sequences.items()}
    p.repeated, p.ov_tokens, p.vocab = p.repeated.to(device), p.ov_tokens.to(device), p.vocab.to(device)
    return p


@dataclass
class Trained:
    runs: dict[str, RunDir]
    probes: ProbeSequences


def train_models(ctx: Ctx) -> Trained:
    runs = {}
    for name in ctx.settings.models:
        config = run_config(ctx.settings, name)
        kind = " (smeared keys)" if config.model.smeared_keys else "" if config.model.attn_only else " with MLPs"
        ctx.log(f"  model {name}: {config.model.n_layers} layers{kind}, {config.train.steps} steps")
        runs[name] = train(config, ctx.out / "runs" / name, ctx.device, progress=False, label=f"induction/{name}").run
    return Trained(runs, probe_sequences_for(ctx.settings, ctx.device))


def _final(ctx: Ctx, m: str) -> IclabHeadModel:
    """Model ``m``'s final weights, seen head by head."""
    run = ctx.models.runs[m]
    return IclabHeadModel(load_model(run, run.read_config(), None, ctx.device)[0])


def _heads(ctx: Ctx, m: str) -> list[Head]:
    return [h.head for h in ctx.results["heads"][m]]


def _ablations(ctx: Ctx, m: str) -> R.Ablations:
    config = ctx.models.runs[m].read_config()
    tokens = InductionTask(config.task).batch(1, ctx.settings.ablation_sequences, "eval").inputs.to(ctx.device)
    return R.ablations(_final(ctx, m), tokens, _heads(ctx, m))


def _mechanism(ctx: Ctx, m: str) -> Mechanism:
    previous = torch.tensor(ctx.results["trajectories"][m].final("previous_token"))
    return induction_mechanism(_final(ctx, m), previous, _heads(ctx, m))


def _example_head(ctx: Ctx) -> tuple[str, Head]:
    """The strongest induction head and its model (none anywhere: the deepest model's best prefix-matching head)."""
    cfg, res = ctx.settings, ctx.results
    top = max(((m, h) for m in cfg.models for h in res["heads"][m]), key=lambda mh: mh[1].prefix_matching, default=None)
    if top is not None:
        return top[0], top[1].head
    m = max(cfg.models, key=lambda m: model_shape(m)[0])
    pm = res["trajectories"][m].final("prefix_matching")
    return m, Head(*np.unravel_index(int(pm.argmax()), pm.shape))


def _example(ctx: Ctx) -> R.AttentionExample:
    m, head = _example_head(ctx)
    return R.attention_example(_final(ctx, m), ctx.models.probes.repeated[:1], head, m)


def _attention(ctx: Ctx) -> tuple[str, PromptAttention]:
    """Every head of the example's model on the same repeated sequence (the report's live view; one forward pass)."""
    m, _ = _example_head(ctx)
    return m, prompt_attention(_final(ctx, m), ctx.models.probes.repeated[0])


def _subject(ctx: Ctx) -> str | None:
    """The model whose phase change is attributed: a 2-layer attention-only one with a window if any."""
    cfg, pc = ctx.settings, ctx.results["phase_change"]
    return next((m for m in sorted(cfg.models, key=lambda m: (m.startswith("smeared"), model_shape(m)[0] != 2))
                 if model_shape(m)[0] >= 2 and pc[m].window is not None), None)


def _attribution(ctx: Ctx) -> R.Attribution:
    m = _subject(ctx)
    texts = {name: ctx.models.probes.sequences[name][: ctx.settings.attribution_sequences] for name in ("natural", "mixture")}
    return R.attribution(ctx.models.runs[m], ctx.results["trajectories"][m], ctx.results["phase_change"][m].window, texts, m, ctx.device)


def parts(cfg: InductionStudySettings) -> list[Part]:
    circuits = [m for m in cfg.models if model_shape(m)[0] >= 2 and not has_mlps(m)]  # attention-only models' circuits
    return [
        *(Part(f"trajectory_{m}", lambda ctx, m=m: R.trajectory(ctx.models.runs[m], ctx.models.probes, ctx.device), R.Trajectory)
          for m in cfg.models),
        Part("trajectories", lambda ctx: {m: ctx.results[f"trajectory_{m}"] for m in cfg.models}, cached=False),
        Part("phase_change", lambda ctx: {m: ctx.results["trajectories"][m].phase_change(cfg.window_level, cfg.min_icl_change)
                                          for m in cfg.models}, cached=False),
        Part("heads", lambda ctx: {m: final_induction_heads(ctx.results["trajectories"][m], cfg) for m in cfg.models}, cached=False),
        *(Part(f"ablation_{m}", lambda ctx, m=m: _ablations(ctx, m), R.Ablations) for m in cfg.models),
        Part("ablations", lambda ctx: {m: ctx.results[f"ablation_{m}"] for m in cfg.models}, cached=False),
        *(Part(f"mechanism_{m}", lambda ctx, m=m: _mechanism(ctx, m), Mechanism) for m in circuits),
        Part("mechanism", lambda ctx: {m: ctx.results[f"mechanism_{m}"] for m in circuits}, cached=False),
        Part("example", _example, R.AttentionExample),
        Part("attention", _attention, cached=False),
        Part("attribution", _attribution, R.Attribution, when=lambda ctx: _subject(ctx) is not None),
        *(Part(f"llc_{m}", lambda ctx, m=m: LLC.curve(ctx, m), LLCTrajectory) for m in LLC.llc_models(cfg)),
        Part("llc_heads", LLC.around_window, LLCTrajectory, when=LLC.has_head_window),
    ]


def final_induction_heads(traj: R.Trajectory, cfg: InductionStudySettings) -> list[InductionHead]:
    """The induction heads of a trajectory's final snapshot, by the study's two settings."""
    return induction_heads(traj.final("prefix_matching"), traj.final("copying"), traj.final("copying_top1"), cfg.induction_threshold,
                           cfg.induction_copying_top1)


def notes(cfg: InductionStudySettings) -> list[str]:
    early, late = icl_positions(cfg.recipe.n_ctx)
    return [
        f"ICL score: loss at token {early} minus loss at token {late} (Olsson et al.'s 500 and 50 of 512, rescaled to "
        f"n_ctx={cfg.recipe.n_ctx}), on held-out sequences.",
        f"Induction heads: prefix-matching >= {cfg.induction_threshold} on BOS + {cfg.probe_length} random tokens x {cfg.probe_repeats}, "
        f"and a direct OV path that ranks the attended token first for more than {cfg.induction_copying_top1:.0%} of the probe "
        "tokens (copying_top1). The copying score "
        "itself (the attended token's raise over the total absolute logit change, rescaled to [-1, 1]) is reported as specified; "
        "it stays far below 1 even for heads that copy every token, because the raise is spread over the other tokens too.",
        f"Phase-change window: where the ICL score (5-snapshot moving average) improves per log token at >= {cfg.window_level} of its "
        "peak rate; an ideal logistic change puts 90% of itself inside at 0.19 (at half the peak, only 71%).",
        "Bump: the largest non-convex stretch of the held-out loss vs log tokens, from a decade before the window on.",
        "Ablation drop: share of the ICL score removed by zero-ablating all induction heads with every attention pattern frozen.",
    ]


STUDY: Study[InductionStudySettings] = Study(
    "induction", PRESETS, parts=parts, claims=findings, figures=plot_all, models=train_models, notes=notes,
    training=lambda cfg: [(name, run_config(cfg, name)) for name in cfg.models],
    variant=lambda cfg: pretrained.STUDY if cfg.model is not None else None,
    title="Induction heads and the ICL phase change", paper="Olsson et al. 2022", minutes=15.7,
    extra_entries=(Entry("induction-smollm2", ("model=smollm2-135m",), " (SmolLM2-135M, a pretrained LM)", minutes=4.3, pretrained=True),))
run = STUDY.run

__all__ = ["PRESETS", "STUDY", "run", "run_config", "probe_sequences_for", "InductionStudySettings"]
