"""The logit lens (nostalgebraist 2020): the residual stream entering each layer read as if it were the last one,
through the model's own final norm and unembedding (:meth:`~iclab.heads.HeadModel.resid_logits`), so one sees at
which depth the answer appears. The last row (the final residual) is the model's own output.

Direct logit attribution (Elhage et al. 2021; Nanda's convention) splits the final residual at the last position into
what the embedding, each head, each attention bias and each MLP wrote, and reads each part through the final norm with
its scale held at the final residual's (the only way the parts add up) onto the answer's unembedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from iclab.heads.base import HeadModel
from iclab.models.norms import frozen_norm
from iclab.results import Result


@dataclass(frozen=True)
class LogitLens(Result):
    """For ids [T] and one answer token: ``logprob`` and ``rank`` [L + 1, T] of the answer at every layer's input (row
    L: the final residual) and position, and ``top`` [L + 1][T], the token each layer would predict there."""

    SCHEMA: ClassVar[int] = 1

    answer: int
    tokens: list[str]
    logprob: np.ndarray
    rank: np.ndarray
    top: list[list[int]]


@torch.no_grad()
def logit_lens(model: HeadModel, ids: torch.Tensor, answer: int) -> LogitLens:
    """The logit lens of ids [T] for the token ``answer``; one residual at a time through the unembedding, so a
    real vocabulary holds [T, V] logits, never [L, T, V]."""
    from iclab.analysis.patching import activations

    resid = activations(model, ids.to(model.device), "resid")  # [T, D] entering each layer, and the final one
    logprob, rank, top = [], [], []
    for layer in range(model.n_layers + 1):
        logits = model.resid_logits(resid[layer])  # [T, V]
        logprob.append(torch.log_softmax(logits, -1)[:, answer].cpu())
        rank.append((logits > logits[:, answer : answer + 1]).sum(-1).cpu())
        top.append(logits.argmax(-1).tolist())
    return LogitLens(answer, model.token_strings(ids.tolist()), torch.stack(logprob).numpy(), torch.stack(rank).numpy(), top)


@dataclass(frozen=True)
class LogitAttribution(Result):
    """Direct logit attribution at the last position of a prompt: how much each part of the final residual stream adds
    to the answer's logit (minus the wrong answer's, when one is given), through the model's own final norm with its
    scale held at the final residual's and its unembedding. ``heads`` [L, H]; ``attn`` and ``mlp`` [L] (a layer's
    attention output is its heads plus its bias, ``attn_bias``); ``embed`` the embedding's share; ``bias`` the final
    norm's and unembedding's biases. The parts sum to ``total``, the model's own logit (difference) before any
    final-logit soft-capping (Gemma 2's): the test of the folding, for every family."""

    SCHEMA: ClassVar[int] = 1

    answer: int
    wrong: int | None
    tokens: list[str]
    heads: np.ndarray
    attn: np.ndarray
    attn_bias: np.ndarray
    mlp: np.ndarray
    embed: float
    bias: float
    total: float


@torch.no_grad()
def direct_logit_attribution(model: HeadModel, ids: torch.Tensor, answer: int, wrong: int | None = None) -> LogitAttribution:
    """Direct logit attribution of ids [T] at the last position: one forward pass with the parts of the residual
    stream recorded there, then each read through the frozen final norm onto the answer's unembedding row."""
    L = model.n_layers
    parts: dict[str, dict[int, torch.Tensor]] = {"z": {}, "resid": {}, "attn_out": {}, "mlp_out": {}}

    def keep(kind: str, layer: int):
        def grab(x: torch.Tensor) -> torch.Tensor:
            parts[kind][layer] = x[:, -1].detach().float()  # [1, ...] at the last position
            return x

        return grab

    hooks = {"z": {layer: keep("z", layer) for layer in range(L)}, "resid": {0: keep("resid", 0), L: keep("resid", L)},
             "attn_out": {layer: keep("attn_out", layer) for layer in range(L)}}
    if model.has_mlp:
        hooks["mlp_out"] = {layer: keep("mlp_out", layer) for layer in range(L)}
    with model.hooked(**hooks):
        model.logits_grad(ids.to(model.device).unsqueeze(0))
    with model.reading_weights():
        final, norm_bias = frozen_norm(model.final_norm(), parts["resid"][L])
    tokens = torch.tensor([answer] if wrong is None else [answer, wrong])
    rows, row_bias = model.unembed_rows(tokens)
    direction = rows[0] - rows[1] if wrong is not None else rows[0]  # [D]
    const = float(row_bias[0] - row_bias[1]) if wrong is not None else float(row_bias[0])

    def logit(x: torch.Tensor) -> torch.Tensor:  # parts [1, K, D] -> [K]
        return (final(x.to(direction.device)) @ direction)[0]

    heads, attn, attn_bias, mlp = (np.zeros((L, model.n_heads)), np.zeros(L), np.zeros(L), np.zeros(L))
    for layer in range(L):
        writes, rest = model.head_writes(layer, parts["z"][layer][0].unsqueeze(0))
        heads[layer] = logit(writes).cpu().numpy()
        attn_bias[layer] = float(logit(rest.unsqueeze(1))[0])
        attn[layer] = float(logit(parts["attn_out"][layer].unsqueeze(1))[0])
        if model.has_mlp:
            mlp[layer] = float(logit(parts["mlp_out"][layer].unsqueeze(1))[0])
    embed = float(logit(parts["resid"][0].unsqueeze(1))[0])
    bias = float(norm_bias[0].to(direction) @ direction) + const
    total = float(logit(parts["resid"][L].unsqueeze(1))[0]) + bias
    return LogitAttribution(answer, wrong, model.token_strings(ids.tolist()), heads, attn, attn_bias, mlp, embed, bias, total)


@dataclass(frozen=True)
class PromptAttention(Result):
    """Every head's attention on one prompt, for the live view: ``patterns`` [L, H, T, T] (query, key), ``loss`` [T] (the
    loss of predicting each token from the ones before it; 0 for the first), and the per-head previous-token and
    prefix-matching scores on this prompt (:mod:`iclab.analysis.heads`' definitions; prefix matching is 0 where no
    token repeats)."""

    SCHEMA: ClassVar[int] = 1

    tokens: list[str]
    patterns: np.ndarray
    loss: np.ndarray
    previous_token: np.ndarray
    prefix_matching: np.ndarray


@torch.no_grad()
def prompt_attention(model: HeadModel, ids: torch.Tensor) -> PromptAttention:
    """:class:`PromptAttention` of ids [T] (one pass for the patterns, one for the losses)."""
    from iclab.analysis.heads import prefix_matching_score, previous_token_score
    from iclab.analysis.induction.evidence import token_losses

    batch = ids.unsqueeze(0).to(model.device)
    patterns = model.patterns(batch)  # [L, 1, H, T, T]
    loss = np.concatenate([[0.0], token_losses(model, batch)[0].numpy()])
    return PromptAttention(model.token_strings(ids.tolist()), patterns[:, 0].cpu().numpy(), loss,
                           previous_token_score(patterns).cpu().numpy(), prefix_matching_score(patterns, batch.cpu()).cpu().numpy())
