"""Induction analyses over a training run of iclab's own models: head scores at every weight snapshot (the
trajectory), head ablations of the final model, one head's attention pattern, and the per-token loss change across
the phase-change window (Olsson et al. 2022)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from iclab.analysis.heads import icl_positions, icl_score
from iclab.analysis.induction_scores import ProbeSequences, score_model, token_losses
from iclab.analysis.loss_attribution import induction_predictable, phase_change_attribution, predictable_gain
from iclab.models import Transformer, ablate_heads, frozen_patterns, mean_z, record_patterns, run_with_cache
from iclab.runs import RunDir, load_model


def trajectory(run: RunDir, probes: ProbeSequences, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Scores at every snapshot of a run, plus its training-loss curve."""
    config = run.read_config()
    tokens_per_step = config.train.batch_size * config.task.n_ctx
    rows: dict[str, list] = {}
    steps = run.snapshot_steps()
    for step in steps:
        model, _ = load_model(run, config, step, device)
        for key, value in score_model(model, probes).items():
            rows.setdefault(key, []).append(value)
    train_rows = [r for r in run.read_metrics() if r.get("split") == "train"]
    return {
        "step": steps,
        "tokens": [s * tokens_per_step for s in steps],
        **rows,
        "train_curve": {"step": [r["step"] for r in train_rows], "loss": [r["loss"] for r in train_rows]},
        "tokens_per_step": tokens_per_step,
    }


@torch.no_grad()
def _icl(model: Transformer, tokens: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(ICL score, mean loss per position [T-1]) of ``model`` on ``tokens`` [B, T]."""
    losses = token_losses(model, tokens)
    return icl_score(losses, *icl_positions(tokens.shape[1])), losses.mean(0)


@torch.no_grad()
def ablations(model: Transformer, tokens: torch.Tensor, heads: list[tuple[int, int]]) -> dict[str, Any]:
    """ICL score of ``model`` on ``tokens`` [B, T] with each head ablated (zero, mean, pattern-preserving zero), and
    with all of ``heads`` (the induction heads) zero-ablated, attention patterns frozen."""
    clean, clean_losses = _icl(model, tokens)
    z_mean = mean_z(model, tokens)
    patterns = record_patterns(model, tokens)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    per_head: dict[str, list[list[float]]] = {"zero": [], "mean": [], "pattern_preserving": []}
    for layer in range(L):
        rows = {k: [] for k in per_head}
        for h in range(H):
            with ablate_heads(model, [(layer, h)], "zero"):
                rows["zero"].append(_icl(model, tokens)[0])
            with ablate_heads(model, [(layer, h)], "mean", z_mean):
                rows["mean"].append(_icl(model, tokens)[0])
            with frozen_patterns(model, patterns), ablate_heads(model, [(layer, h)], "zero"):
                rows["pattern_preserving"].append(_icl(model, tokens)[0])
        for k in per_head:
            per_head[k].append(rows[k])
    out: dict[str, Any] = {"clean": clean, "per_head": per_head}
    if heads:
        with frozen_patterns(model, patterns), ablate_heads(model, list(heads), "zero"):
            ablated, ablated_losses = _icl(model, tokens)
        out["induction_heads_ablated"] = ablated
        out["induction_heads_loss_change"] = (ablated_losses - clean_losses).tolist()  # [T-1] per position
        out["drop"] = 1 - ablated / clean if clean < 0 else None  # share of the (negative) ICL score removed
    return out


@torch.no_grad()
def attention_example(model: Transformer, tokens: torch.Tensor, head: tuple[int, int]) -> dict[str, Any]:
    """The head's attention pattern [T, T] on one sequence ``tokens`` [1, T]."""
    _, cache = run_with_cache(model, tokens, names=[f"blocks.{head[0]}.attn.hook_pattern"])
    return {"layer": head[0], "head": head[1], "tokens": tokens[0].tolist(),
            "pattern": cache[f"blocks.{head[0]}.attn.hook_pattern"][0, head[1]].tolist()}


@torch.no_grad()
def attribution(run: RunDir, traj: dict[str, Any], window: dict[str, Any], texts: dict[str, torch.Tensor],
                device: torch.device | str = "cpu") -> dict[str, Any]:
    """Per-token loss change across the run's phase-change ``window`` on each of ``texts`` (name -> tokens [B, T]; the
    study: held-out stdlib text and, for comparison, training-mixture sequences), its projection on the phase-change
    direction of the per-token-loss PCA, and the gain of induction-predictable tokens against the rest."""
    config = run.read_config()
    steps = traj["step"]
    tokens = np.array(traj["tokens"], dtype=np.float64)
    before = max(int(np.searchsorted(tokens, window["start_tokens"], side="right") - 1), 0)
    after = int(min(np.searchsorted(tokens, window["end_tokens"], side="left"), len(tokens) - 1))
    losses: dict[str, list[np.ndarray]] = {name: [] for name in texts}
    for step in steps:
        model = load_model(run, config, step, device)[0]
        for name, text in texts.items():
            losses[name].append(token_losses(model, text).flatten().cpu().numpy())
    out: dict[str, Any] = {"before_step": steps[before], "after_step": steps[after]}
    for name, text in texts.items():
        attr = phase_change_attribution(np.stack(losses[name]), before, after)
        out[name] = {"tokens": text.cpu().tolist(), "delta": attr.delta.tolist(), "projection": attr.projection.tolist(),
                     "component": attr.component, "explained": attr.explained,
                     "predictable": induction_predictable(text.cpu()).flatten().tolist(),
                     **predictable_gain(attr.delta, induction_predictable(text.cpu()).flatten().numpy())}
    return out
