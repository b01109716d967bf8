"""Induction analyses over a training run of iclab's own models: head scores at every weight snapshot (the
trajectory), head ablations of the final model, one head's attention pattern, and the per-token loss change across
the phase-change window (Olsson et al. 2022). Each returns a typed result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from iclab.analysis.induction.evidence import ablation, token_losses
from iclab.analysis.induction.loss_attribution import induction_predictable, phase_change_attribution, predictable_gain
from iclab.analysis.induction.phase_change import PhaseChange, Window, trajectory_phase_change
from iclab.analysis.induction.scores import LOSS_BATCH, ProbeSequences, SnapshotScores, score_model
from iclab.heads.base import HeadModel
from iclab.heads.own import IclabHeadModel
from iclab.models.intervention import Intervention
from iclab.results import Head, Result
from iclab.runs import RunDir, TrainCurve, load_model, train_curve
from iclab.tasks.induction import icl_positions, icl_score


@dataclass(frozen=True)
class Trajectory(Result):
    """A run scored at every weight snapshot: ``step`` [S], ``tokens`` [S] seen, the :class:`SnapshotScores` of each,
    and the training-loss curve."""

    SCHEMA: ClassVar[int] = 1

    step: list[int]
    tokens: list[int]
    snapshots: list[SnapshotScores]
    train_curve: TrainCurve
    tokens_per_step: int

    def icl_score(self, sequences: str) -> np.ndarray:
        """[S] ICL score on the held-out ``sequences`` ("mixture" or "natural")."""
        return np.array([s.icl_score[sequences] for s in self.snapshots])

    def loss(self, sequences: str) -> np.ndarray:
        """[S] mean loss on the held-out ``sequences``."""
        return np.array([s.loss[sequences] for s in self.snapshots])

    def head_scores(self, score: str) -> np.ndarray:
        """[S, L, H] one per-head score ("prefix_matching", "previous_token", "copying", "copying_top1") over snapshots."""
        return np.array([getattr(s, score) for s in self.snapshots])

    def final(self, score: str) -> np.ndarray:
        """[L, H] a per-head score at the last snapshot."""
        return np.array(getattr(self.snapshots[-1], score))

    def phase_change(self, level: float, min_icl_change: float) -> PhaseChange:
        return trajectory_phase_change(np.array(self.step), np.array(self.tokens), self.icl_score("mixture"), self.loss("mixture"),
                                       np.array([s.position_losses for s in self.snapshots]), level, min_icl_change)


def trajectory(run: RunDir, probes: ProbeSequences, device: torch.device | str = "cpu") -> Trajectory:
    """Scores at every snapshot of a run, plus its training-loss curve."""
    config = run.read_config()
    tokens_per_step = config.train.batch_size * config.task.n_ctx
    steps = run.snapshot_steps()
    snapshots = [score_model(IclabHeadModel(load_model(run, config, step, device)[0]), probes) for step in steps]
    return Trajectory(steps, [s * tokens_per_step for s in steps], snapshots, train_curve(run), tokens_per_step)


@torch.no_grad()
def _icl(model: HeadModel, tokens: torch.Tensor, iv: Intervention | None = None) -> tuple[float, torch.Tensor]:
    """(ICL score, mean loss per position [T-1]) of ``model`` on ``tokens`` [B, T] under ``iv``, in one batch (frozen
    patterns are recorded for the whole batch)."""
    losses = token_losses(model, tokens, iv, batch=len(tokens))
    return icl_score(losses, *icl_positions(tokens.shape[1])), losses.mean(0)


@dataclass(frozen=True)
class Ablations(Result):
    """ICL score of the final model clean, with each head ablated (``per_head``: mode -> [L][H]; zero, mean,
    pattern-preserving zero), and with all induction heads zero-ablated under frozen patterns (None: there are
    none): the score, its change per position [T-1], and the share of the (negative) clean score removed."""

    SCHEMA: ClassVar[int] = 1

    clean: float
    per_head: dict[str, list[list[float]]]
    induction_heads_ablated: float | None = None
    induction_heads_loss_change: list[float] | None = None
    drop: float | None = None


@torch.no_grad()
def ablations(model: HeadModel, tokens: torch.Tensor, heads: list[Head]) -> Ablations:
    """ICL score of ``model`` on ``tokens`` [B, T] with each head ablated (zero, mean per position over the batch,
    pattern-preserving zero), and with all of ``heads`` (the induction heads) zero-ablated, attention patterns frozen."""
    clean, clean_losses = _icl(model, tokens)
    with model.capture_z() as cache:
        model.logits(tokens)
    z_mean = cache.z.mean(dim=1)  # [L, T, H, E]: every head's z averaged over the batch, per position
    patterns = model.patterns(tokens)  # [L, B, H, T, S]
    per_head: dict[str, list[list[float]]] = {"zero": [], "mean": [], "pattern_preserving": []}
    for layer in range(model.n_layers):
        rows: dict[str, list[float]] = {k: [] for k in per_head}
        for h in range(model.n_heads):
            head = [Head(layer, h)]
            rows["zero"].append(_icl(model, tokens, ablation(model, head, "zero"))[0])
            rows["mean"].append(_icl(model, tokens, ablation(model, head, "mean", z_mean))[0])
            with model.frozen_patterns(patterns):
                rows["pattern_preserving"].append(_icl(model, tokens, ablation(model, head, "zero"))[0])
        for k in per_head:
            per_head[k].append(rows[k])
    if not heads:
        return Ablations(clean, per_head)
    with model.frozen_patterns(patterns):
        ablated, ablated_losses = _icl(model, tokens, ablation(model, list(heads), "zero"))
    return Ablations(clean, per_head, ablated, (ablated_losses - clean_losses).tolist(),
                     1 - ablated / clean if clean < 0 else None)


@dataclass(frozen=True)
class AttentionExample(Result):
    """One head's attention ``pattern`` [T][T] on one sequence ``tokens`` [T] of ``model``."""

    SCHEMA: ClassVar[int] = 1

    model: str
    head: Head
    tokens: list[int]
    pattern: list[list[float]]


@torch.no_grad()
def attention_example(model: HeadModel, tokens: torch.Tensor, head: Head, name: str) -> AttentionExample:
    """The head's attention pattern [T, T] on one sequence ``tokens`` [1, T] of the model called ``name``."""
    return AttentionExample(name, head, tokens[0].tolist(), model.patterns(tokens)[head.layer, 0, head.head].tolist())


@dataclass(frozen=True)
class TextAttribution:
    """Per-token loss change on one set of texts (``tokens`` [B][T]): ``delta`` and ``projection`` [B * (T-1)], the
    phase-change direction (its principal ``component`` and the variance ``explained``), which tokens an induction
    head can predict, and the gain of those against the rest (one-sided Welch test)."""

    tokens: list[list[int]]
    delta: list[float]
    projection: list[float]
    component: int
    explained: float
    predictable: list[bool]
    mean_delta_predictable: float | None
    mean_delta_other: float | None
    n_predictable: int
    p_value: float | None


@dataclass(frozen=True)
class Attribution(Result):
    """The per-token loss change of ``model`` between snapshots ``before_step`` and ``after_step`` (around its
    phase-change window) on held-out stdlib text and on the held-out training mixture."""

    SCHEMA: ClassVar[int] = 1

    model: str
    before_step: int
    after_step: int
    natural: TextAttribution
    mixture: TextAttribution


@torch.no_grad()
def attribution(run: RunDir, traj: Trajectory, window: Window, texts: dict[str, torch.Tensor], name: str,
                device: torch.device | str = "cpu") -> Attribution:
    """Per-token loss change across the run's phase-change ``window`` on ``texts`` ("natural" and "mixture" ->
    tokens [B, T]), its projection on the phase-change direction of the per-token-loss PCA, and the gain of
    induction-predictable tokens against the rest."""
    config = run.read_config()
    steps = traj.step
    tokens = np.array(traj.tokens, dtype=np.float64)
    before = max(int(np.searchsorted(tokens, window.start_tokens, side="right") - 1), 0)
    after = int(min(np.searchsorted(tokens, window.end_tokens, side="left"), len(tokens) - 1))
    losses: dict[str, list[np.ndarray]] = {key: [] for key in texts}
    for step in steps:
        model = load_model(run, config, step, device)[0]
        for key, text in texts.items():
            losses[key].append(token_losses(IclabHeadModel(model), text, batch=LOSS_BATCH).flatten().numpy())
    out: dict[str, TextAttribution] = {}
    for key, text in texts.items():
        attr = phase_change_attribution(np.stack(losses[key]), before, after)
        predictable = induction_predictable(text.cpu()).flatten()
        gain = predictable_gain(attr.delta, predictable.numpy())
        out[key] = TextAttribution(text.cpu().tolist(), attr.delta.tolist(), attr.projection.tolist(), int(attr.component),
                                   float(attr.explained), predictable.tolist(), **gain)
    return Attribution(name, steps[before], steps[after], out["natural"], out["mixture"])
