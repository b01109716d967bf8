"""Scoring a token model for induction: everything the induction study measures on one set of weights.

:func:`head_scores` is the one per-head scorer, for any :class:`~iclab.heads.HeadModel` on given probes;
:func:`score_heads` draws the probes for a model and calls it. One call of :func:`score_model` gives, for a model at
one snapshot,
  - the ICL score and per-token losses on fixed held-out sequences,
  - per-head prefix-matching and previous-token scores (from one cached forward
    pass on repeated random tokens, patterns only) and copying scores (from the
    heads' direct OV paths, no forward pass).
The probes are built once by :func:`make_probe_sequences` and reused for every snapshot,
so scores at different snapshots are comparable and cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iclab.analysis.heads import (
    copying_statistics,
    ov_eigenvalue_copying,
    prefix_matching_score,
    previous_token_score,
    repeated_random_tokens,
)
from iclab.analysis.induction.evidence import token_losses
from iclab.heads.base import HeadModel
from iclab.results import Head
from iclab.tasks.induction import icl_positions, icl_score
from iclab.progress import track


@dataclass
class ProbeSequences:
    sequences: dict[str, torch.Tensor]  # name -> held-out tokens [B, T] (e.g. "mixture", "natural")
    repeated: torch.Tensor  # [B, 1 + n * r] BOS + random tokens repeated
    ov_tokens: torch.Tensor  # [N] source tokens for the copying score
    vocab: torch.Tensor  # [V'] the tokens probes draw from; copying compares logits among these only
    loss_positions: torch.Tensor  # [K, 2] (sequence, position) pairs of the "mixture" set, for the loss PCA


def make_probe_sequences(sequences: dict[str, torch.Tensor], vocab: torch.Tensor, generator: torch.Generator, *, length: int = 25,
                repeats: int = 4, batch: int = 64, n_ov_tokens: int = 64, n_loss_positions: int = 256) -> ProbeSequences:
    """Fixed probe data. ``vocab`` [V']: tokens the random probes draw from (BOS is ``vocab[0]`` left out)."""
    bos, pool = vocab[0], vocab[1:]
    rep = repeated_random_tokens(batch, length, repeats, pool, generator, bos=int(bos))
    ov = pool[torch.randperm(len(pool), generator=generator)[:n_ov_tokens]]
    mix = sequences["mixture"]
    B, T = mix.shape
    pos = torch.stack([torch.randint(B, (n_loss_positions,), generator=generator),
                       torch.randint(T - 1, (n_loss_positions,), generator=generator)], dim=1)
    return ProbeSequences(sequences, rep, ov, pool, pos)


def restricted_ov(ov_logits: torch.Tensor, tokens: torch.Tensor, vocab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only the logits of ``vocab`` [V'] (the probe tokens; a model trained on a sub-alphabet raises all of it
    together, which says nothing about copying) and re-index ``tokens`` [N] into it: ([..., N, V'], [N])."""
    return ov_logits[..., vocab.to(ov_logits.device)], vocab_index(tokens, vocab)


def vocab_index(tokens: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
    """Where each of ``tokens`` [N] sits in ``vocab`` [V']: [N] indices into it."""
    return (tokens.unsqueeze(1) == vocab.to(tokens.device).unsqueeze(0)).float().argmax(1)


LOSS_BATCH = 256  # sequences per forward pass when scoring iclab's small models


@dataclass(frozen=True)
class SnapshotScores:
    """One set of weights scored: ICL score and mean loss per held-out set (name -> value), the losses of the fixed
    positions of the "mixture" set [K], and per-head [L][H] prefix-matching, previous-token and copying scores."""

    icl_score: dict[str, float]
    loss: dict[str, float]
    position_losses: list[float]
    prefix_matching: list[list[float]]
    previous_token: list[list[float]]
    copying: list[list[float]]
    copying_top1: list[list[float]]


@torch.no_grad()
def score_model(model: HeadModel, probes: ProbeSequences) -> SnapshotScores:
    """Scores of one set of weights on the fixed ``probes``."""
    icl, loss, positions = {}, {}, []
    for name, seqs in probes.sequences.items():
        losses = token_losses(model, seqs, batch=LOSS_BATCH)
        late, early = icl_positions(seqs.shape[1])
        icl[name] = icl_score(losses, late, early)
        loss[name] = float(losses.mean())
        if name == "mixture":
            positions = losses[probes.loss_positions[:, 0], probes.loss_positions[:, 1]].tolist()
    # the head scores go through the one head interface and the one scorer, as for any model
    scores = head_scores(model, probes.repeated, probes.ov_tokens, probes.vocab, detection=False)
    return SnapshotScores(icl, loss, positions, **{name: value.tolist() for name, value in scores.items()})


@torch.no_grad()
def head_scores(model, repeated: torch.Tensor, ov_tokens: torch.Tensor, vocab: torch.Tensor, *,
                detection: bool = True) -> dict[str, torch.Tensor]:
    """Per-head scores [L, H] of any :class:`~iclab.heads.HeadModel` on given probes: prefix-matching and
    previous-token on ``repeated`` [B, T] (BOS + random tokens repeated), copying (the specified logit score and its
    top-1 share) for source tokens ``ov_tokens`` [N] with logits compared among ``vocab`` [V']; with ``detection``,
    also Olsson et al.'s eigenvalue copying measure, the copying rank (meaningful at any vocabulary size, where the
    specified score tends to -1) and TransformerLens "mul" detection scores.
    Grouped-query heads are scored per query head."""
    patterns = model.patterns(repeated, fast=True).cpu()  # [L, B, H, T, T]
    copying, top1, rank = copying_scores(model, ov_tokens, vocab)
    out = {"prefix_matching": prefix_matching_score(patterns, repeated.cpu()), "previous_token": previous_token_score(patterns),
           "copying": copying, "copying_top1": top1}
    if detection:
        from iclab.analysis.heads import (
            detection_score,
            duplicate_token_detection,
            induction_detection,
            previous_token_detection,
        )

        bos = model.bos_id is not None
        seq = repeated.cpu()
        out.update({
            "copying_eigenvalues": ov_eigenvalue_copying(model),
            "copying_rank": rank,
            "induction_detection": detection_score(patterns, induction_detection(seq), exclude_bos=bos),
            "previous_token_detection": detection_score(patterns, previous_token_detection(seq), exclude_bos=bos),
            "duplicate_token_detection": detection_score(patterns, duplicate_token_detection(seq), exclude_bos=bos),
        })
    return out


@torch.no_grad()
def copying_scores(model, tokens: torch.Tensor, vocab: torch.Tensor,
                   chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Copying score, top-1 copying share and copying rank [L, H] of every head of a :class:`~iclab.heads.HeadModel`, for source
    tokens ``tokens`` [N] with logits compared among ``vocab`` [V'].

    Computed layer by layer and ``chunk`` source tokens at a time, so at most [H, chunk, V] logits exist at once
    (never [L, H, N, V]: 10 GB for SmolLM2 at N = 200), each head's logits only among ``vocab``. Equal to
    :func:`copying_score` / :func:`copying_top1` / :func:`copying_rank` on the full tensor (tested; for a Hugging Face
    model the unembedding product runs in bfloat16 where that is fast, ``iclab.heads.hf.circuits.OV_PRODUCT_BF16``)."""
    vocab = vocab.to(model.device)
    copying = torch.zeros(model.n_layers, model.n_heads)
    top1 = torch.zeros(model.n_layers, model.n_heads)
    rank = torch.zeros(model.n_layers, model.n_heads)
    for layer in track(range(model.n_layers), what="layers' OV circuits"):
        for i in range(0, len(tokens), chunk):
            part = tokens[i : i + chunk]
            logits = model.ov_logits(layer, part, vocab, float32=False)  # [H, n, V'] in the product's dtype
            index, n = vocab_index(part.to(vocab.device), vocab), len(part)
            for h in range(model.n_heads):  # a head at a time in float32: [n, V'] stays in cache for every pass over it
                score, share, ranked = copying_statistics(logits[h : h + 1].float(), index)
                copying[layer, h] += float((score + 1) * n)  # copying_score = 4 * mean ratio - 1
                top1[layer, h] += float(share * n)
                rank[layer, h] += float(ranked * n)
    return copying / len(tokens) - 1, top1 / len(tokens), rank / len(tokens)


def probe_shape(n_ctx: int | None) -> tuple[int, int]:
    """(length, repeats) of the repeated-random-token probe: Olsson et al.'s 25 tokens x 4 when the context
    has room, else fewer repeats / shorter spans that fit."""
    n_ctx = 101 if n_ctx is None else n_ctx
    repeats = 4 if n_ctx >= 101 else 2
    return min(25, (n_ctx - 1) // repeats), repeats


@torch.no_grad()
def score_heads(model, generator: torch.Generator, vocab: torch.Tensor | None = None, *, length: int | None = None,
                repeats: int | None = None, batch: int = 16, n_ov_tokens: int = 200) -> dict[str, torch.Tensor]:
    """Per-head scores [L, H] of any :class:`~iclab.heads.HeadModel` (iclab's or a Hugging Face model's):
    prefix-matching, previous-token, copying (the specified logit score, its top-1 share, and Olsson et al.'s
    eigenvalue measure), and TransformerLens "mul" detection scores, on BOS + ``length``
    random tokens from ``vocab`` [V'] (default: the model's probe vocabulary) repeated ``repeats`` times
    (default: :func:`probe_shape` of the model's context). Grouped-query heads are scored per query head."""
    vocab = model.probe_vocab() if vocab is None else vocab
    if length is None or repeats is None:
        length, repeats = probe_shape(model.n_ctx)
    seq = repeated_random_tokens(batch, length, repeats, vocab, generator, bos=model.bos_id)
    ov = vocab[torch.randperm(len(vocab), generator=generator)[:n_ov_tokens]]
    return head_scores(model, seq, ov, vocab)


@dataclass(frozen=True)
class InductionHead:
    """A head that matches prefixes and copies, with its scores."""

    head: Head
    prefix_matching: float
    copying: float
    copying_top1: float


def induction_heads(prefix_matching: np.ndarray, copying: np.ndarray, copying_top1: np.ndarray, threshold: float,
                    min_copying_top1: float) -> list[InductionHead]:
    """Induction heads from per-head scores [L, H]: prefix-matching >= ``threshold`` and a direct OV path that copies
    (it raises the attended token above every other probe token for more than ``min_copying_top1`` of the probe
    tokens), strongest first."""
    pm, cp, top1 = (np.asarray(x) for x in (prefix_matching, copying, copying_top1))
    heads = [Head(layer, h) for layer, h in zip(*np.nonzero((pm >= threshold) & (top1 > min_copying_top1)))]
    heads.sort(key=lambda lh: -pm[lh])
    return [InductionHead(h, float(pm[h]), float(cp[h]), float(top1[h])) for h in heads]
