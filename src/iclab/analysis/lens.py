"""The logit lens (nostalgebraist 2020): the residual stream entering each layer read as if it were the last one,
through the model's own final norm and unembedding (:meth:`~iclab.heads.HeadModel.resid_logits`), so one sees at
which depth the answer appears. The last row (the final residual) is the model's own output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from iclab.heads.base import HeadModel
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
    store: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def grab(x: torch.Tensor) -> torch.Tensor:
            store[layer] = x[0].detach()
            return x

        return grab

    with model.hooked(resid={layer: keep(layer) for layer in range(model.n_layers + 1)}):
        model.logits_grad(ids.to(model.device).unsqueeze(0))
    logprob, rank, top = [], [], []
    for layer in range(model.n_layers + 1):
        logits = model.resid_logits(store[layer])  # [T, V]
        logprob.append(torch.log_softmax(logits, -1)[:, answer].cpu())
        rank.append((logits > logits[:, answer : answer + 1]).sum(-1).cpu())
        top.append(logits.argmax(-1).tolist())
    return LogitLens(answer, model.token_strings(ids.tolist()), torch.stack(logprob).numpy(), torch.stack(rank).numpy(), top)
