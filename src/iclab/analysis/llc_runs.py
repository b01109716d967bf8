"""The LLC along an iclab training run: the estimator of :mod:`iclab.analysis.llc` at the run's snapshots, on a fixed
sample of the run's own task, for the whole model and (refined, Wang et al. 2024) for each attention head's weights.

Data: n sequences (or prompts) of the task's eval split, drawn once from a seed; the loss is the task's training loss
(for token tasks, optionally limited to chosen positions: the refined LLC's data restriction). The phase-change window
comes from the run's own logged ICL score where it has one (:func:`iclab.analysis.induction.phase_change.phase_change_window`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from iclab.analysis.llc import LLCEstimate, LossFn, Masks, SGLDSettings, estimate_llc
from iclab.errors import IclabError
from iclab.models import Transformer
from iclab.progress import track
from iclab.results import Head, Result
from iclab.tasks import make_task
from iclab.tasks.base import Batch


def task_loss(task, data: Batch, positions: list[int] | None = None) -> LossFn:
    """The task's loss on the samples ``indices`` of ``data`` (extras sliced along with them); with ``positions``, a
    token task's next-token loss at those positions only (indices into its [T - 1] per-token losses)."""
    n = len(data.inputs)

    def part(indices: torch.Tensor) -> Batch:
        extras = {k: v[indices] if isinstance(v, torch.Tensor) and v.dim() > 0 and len(v) == n else v
                  for k, v in data.extras.items()}
        return Batch(data.inputs[indices], data.targets[indices], extras)

    if positions is None:
        return lambda model, idx: task.loss(model(data.inputs[idx]), part(idx))
    per_token = getattr(task, "token_losses", None)
    if per_token is None:
        raise IclabError(f"{type(task).__name__} has no per-token loss; a position restriction needs a token task")
    cols = torch.tensor(positions)
    return lambda model, idx: per_token(model(data.inputs[idx]), data.targets[idx])[:, cols].mean()


def head_masks(model: Transformer, head: Head) -> Masks:
    """The weights of one attention head: its slices of W_Q, W_K, W_V, W_O and their biases."""
    layer, h = head
    if not (0 <= layer < model.cfg.n_layers and 0 <= h < model.cfg.n_heads):
        raise IclabError(f"head {head} is not in this model ({model.cfg.n_layers} layers x {model.cfg.n_heads} heads)")
    masks: Masks = {}
    for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"):
        p = getattr(model.blocks[layer].attn, name)
        mask = torch.zeros_like(p)
        mask[h] = 1.0
        masks[f"blocks.{layer}.attn.{name}"] = mask
    return masks


def layer_masks(model: Transformer, layer: int) -> Masks:
    """Every weight of one layer (attention, MLP and norms)."""
    names = [n for n, _ in model.named_parameters() if n.startswith(f"blocks.{layer}.")]
    if not names:
        raise IclabError(f"layer {layer} is not in this model ({model.cfg.n_layers} layers)")
    return {n: None for n in names}


def embedding_masks(model: Transformer) -> Masks:
    """The token (or input) embedding and the learned positions."""
    return {n: None for n, _ in model.named_parameters() if n in ("W_E", "W_pos") or n.startswith("read_in.")}


@dataclass(frozen=True)
class LLCTrajectory(Result):
    """The LLC at each snapshot ``step`` [S] (``tokens`` seen), the whole model's ``estimates`` and, when asked, each
    head's refined LLC (``heads``: "L0H1" -> [S] estimates); the run's logged eval loss and ICL score at those steps
    (NaN where not logged), its phase-change window in tokens (None: none, or no ICL score logged), and the best
    head's prefix-matching score on repeated random tokens at each snapshot (the induction heads' causal side)."""

    SCHEMA: ClassVar[int] = 2  # 2: with the induction score

    run: str
    settings: SGLDSettings
    n_samples: int
    step: list[int]
    tokens: list[int]
    estimates: list[LLCEstimate]
    heads: dict[str, list[LLCEstimate]]
    eval_loss: list[float]
    icl_score: list[float]
    window: tuple[float, float] | None
    induction_score: list[float]  # the best head's prefix-matching score at each snapshot (NaN: not a token model)

    def llc(self) -> np.ndarray:
        return np.array([e.llc for e in self.estimates])

    def head_llc(self) -> dict[str, np.ndarray]:
        return {h: np.array([e.llc for e in v]) for h, v in self.heads.items()}


@torch.no_grad()
def best_prefix_matching(model: Transformer, vocab: torch.Tensor, seed: int = 0, length: int = 25, batch: int = 16) -> float:
    """The largest prefix-matching score over the heads (Olsson et al.'s definition) on BOS (``vocab[0]``) + random
    tokens from ``vocab[1:]`` repeated twice, as the induction study probes; NaN for a model that does not read tokens."""
    from iclab.analysis.heads import prefix_matching_score, repeated_random_tokens
    from iclab.heads import IclabHeadModel

    length = min(length, (model.cfg.n_ctx - 1) // 2)
    if model.cfg.input != "tokens" or length < 2:
        return float("nan")
    heads = IclabHeadModel(model)
    ids = repeated_random_tokens(batch, length, 2, vocab[1:], torch.Generator().manual_seed(seed), bos=int(vocab[0]))
    return float(prefix_matching_score(heads.patterns(ids), ids).max())


EVAL_LOSS_KEYS = ("loss", "mse")  # the eval metric that is the task's loss: token tasks log "loss", linreg its "mse"


def _logged(metrics: list[dict], steps: list[int], key: str) -> list[float]:
    """A logged eval metric at ``steps``, interpolated between the steps it was logged at (NaN outside them)."""
    rows = sorted((int(r["step"]), float(r[key])) for r in metrics if r.get("split") == "eval" and key in r)
    if len(rows) < 2:
        return [float(dict(rows).get(s, float("nan"))) for s in steps]
    at, value = (np.array(v, dtype=float) for v in zip(*rows))
    return [float(np.interp(s, at, value)) if at[0] <= s <= at[-1] else float("nan") for s in steps]


def llc_trajectory(path: Path | str, settings: SGLDSettings = SGLDSettings(), n_samples: int = 1024,
                   snapshots: int | None = None, heads: bool = False, positions: list[int] | None = None,
                   device: torch.device | str = "cpu", steps: list[int] | None = None) -> LLCTrajectory:
    """The LLC at ``snapshots`` snapshots of the run at ``path`` (evenly spread over its saved ones; None: all; or
    exactly the saved ``steps``), and each head's refined LLC with ``heads``."""
    from iclab.analysis.induction.phase_change import phase_change_window
    from iclab.runs import load_model
    from iclab.train.rundir import RunDir

    run = RunDir(Path(path))
    config = run.read_config()
    saved = run.snapshot_steps()
    if steps is not None and not set(steps) <= set(saved):
        raise IclabError(f"{path}: no snapshot at step(s) {sorted(set(steps) - set(saved))}")
    steps = list(steps) if steps is not None else saved
    if not steps:
        raise IclabError(f"{path}: the run saved no snapshots (train.snapshots = 0), so there is no trajectory to estimate; "
                         "train with --set train.snapshots=20")
    if snapshots is not None and snapshots < len(steps):
        steps = [steps[round(i)] for i in np.linspace(0, len(steps) - 1, snapshots)]
    task = make_task(config.task)
    data = task.batch(0, n_samples, "eval", device)
    loss = task_loss(task, data, positions)
    T = data.inputs.shape[1]
    per_step = config.train.batch_size * (T if data.inputs.dim() == 2 else 1)
    span = getattr(config.task, "synthetic_vocab", None)  # the induction task's span alphabet (the study's probe tokens)
    vocab = (torch.arange(span) if span else data.inputs.unique()) if data.inputs.dim() == 2 else None
    estimates, per_head, induction = [], {}, []
    for i, step in enumerate(track(steps, total=len(steps), what="snapshots")):
        model = load_model(run, config, step, device)[0]
        induction.append(best_prefix_matching(model, vocab, settings.seed) if vocab is not None else float("nan"))
        seed = replace(settings, seed=settings.seed + i)  # independent chains per snapshot, reproducible
        estimates.append(estimate_llc(model, loss, n_samples, seed))
        if heads:
            for layer in range(model.cfg.n_layers):
                for h in range(model.cfg.n_heads):
                    est = estimate_llc(model, loss, n_samples, seed, masks=head_masks(model, Head(layer, h)))
                    per_head.setdefault(str(Head(layer, h)), []).append(est)
    metrics = run.read_metrics()
    icl = _logged(metrics, steps, "icl_score")
    window = None
    all_icl = [(int(r["step"]), float(r["icl_score"])) for r in metrics if r.get("split") == "eval" and "icl_score" in r]
    if len(all_icl) >= 3:
        s, v = zip(*sorted(all_icl))
        w = phase_change_window(np.array(s, dtype=float) * per_step, np.array(v))
        window = None if w is None else (w.start_tokens, w.end_tokens)
    loss_key = next((k for k in EVAL_LOSS_KEYS if any(r.get("split") == "eval" and k in r for r in metrics)), "loss")
    return LLCTrajectory(str(path), settings, n_samples, steps, [s * per_step for s in steps], estimates, per_head,
                         _logged(metrics, steps, loss_key), icl, window, induction)
