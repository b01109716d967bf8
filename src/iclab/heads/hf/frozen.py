"""Attention with its pattern pinned: an attention function registered with ``transformers``' AttentionInterface
that multiplies a recorded pattern into the values, so that queries and keys no longer decide where a head looks
(:meth:`iclab.heads.hf.HFHeadModel.frozen_patterns`)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn as nn

from iclab.errors import IclabError

FROZEN_ATTENTION = "iclab_frozen_patterns"
_FROZEN: dict[int, torch.Tensor] = {}  # id(attention module) -> its pinned pattern [B, H, T, S], inside frozen_patterns()


def _frozen_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                      scaling: float | None = None, dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """An attention function with the pattern pinned: query [B, H, T, E], value [B, H_kv, S, E] -> ([B, T, H, E], pattern)."""
    pattern = _FROZEN.get(id(module))
    if pattern is None:
        raise IclabError("frozen attention ran outside HFHeadModel.frozen_patterns()")
    if pattern.shape[0] != query.shape[0] or pattern.shape[-2:] != (query.shape[-2], value.shape[-2]):
        raise IclabError(f"recorded patterns have shape {tuple(pattern.shape)}, this input gives queries {tuple(query.shape)} and "
                         f"values {tuple(value.shape)}; freeze patterns recorded on the same ids")
    v = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)  # grouped-query heads read their group's values
    return torch.matmul(pattern.to(v), v).transpose(1, 2).contiguous(), pattern


def register_frozen_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(FROZEN_ATTENTION, _frozen_attention)
    AttentionMaskInterface.register(FROZEN_ATTENTION, eager_mask)  # the mask is built but unused: the pattern decides



@contextlib.contextmanager
def pinned(patterns: dict[int, torch.Tensor]) -> Iterator[None]:
    """Within the block, the attention module with id ``i`` attends with ``patterns[i]`` [B, H, T, S] (it must run
    :data:`FROZEN_ATTENTION`); what was pinned before is restored after."""
    register_frozen_attention()
    saved = dict(_FROZEN)
    _FROZEN.clear()
    _FROZEN.update(patterns)
    try:
        yield
    finally:
        _FROZEN.clear()
        _FROZEN.update(saved)
