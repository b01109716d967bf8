"""Head ablations: zero and mean, through hooks on ``attn.hook_z``.

A head is a pair (layer, head). Zero ablation sets the head's z to 0, which
equals deleting its W_O (and leaves b_O, shared by all heads, in place).
Mean ablation replaces z by its mean over a reference batch, per position.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Literal

import torch

from iclab.errors import IclabError
from iclab.models.hooks import HookPoint, hooks, run_with_cache
from iclab.models.transformer import Transformer
from iclab.results import Head

AblationMode = Literal["zero", "mean"]


def check_heads(model: Transformer, heads: Iterable[Head]) -> list[Head]:
    """Validate (layer, head) pairs against the model's shape."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out = []
    for layer, head in heads:
        if not (0 <= layer < L and 0 <= head < H):
            raise IclabError(f"head ({layer}, {head}) does not exist: layers 0..{L - 1}, heads 0..{H - 1}")
        out.append(Head(layer, head))
    return out


def head_mask_without(model: Transformer, heads: Iterable[Head]) -> torch.Tensor:
    """A head mask [L, H] of ones with zeros at ``heads`` (zero ablation as a mask)."""
    mask = torch.ones(model.cfg.n_layers, model.cfg.n_heads, device=next(model.parameters()).device)
    for layer, head in check_heads(model, heads):
        mask[layer, head] = 0.0
    return mask


@torch.no_grad()
def mean_z(model: Transformer, inputs: torch.Tensor) -> torch.Tensor:
    """Mean of every head's z over the batch, per position: [L, T, H, E]."""
    _, cache = run_with_cache(model, inputs, names=lambda n: n.endswith("attn.hook_z"))
    return cache.stack("attn.hook_z").mean(dim=1)


@contextlib.contextmanager
def ablate_heads(
    model: Transformer,
    heads: Iterable[Head],
    mode: AblationMode = "zero",
    z_mean: torch.Tensor | None = None,
) -> Iterator[Transformer]:
    """Within the block, the given heads are zero- or mean-ablated.

    ``z_mean`` [L, T, H, E] (from :func:`mean_z`) is required for ``mode="mean"``;
    positions beyond its T use its last position's mean.
    """
    from iclab.models.intervention import Intervention, edit_z  # the one implementation of head edits

    heads = check_heads(model, heads)
    if mode not in ("zero", "mean"):
        raise IclabError(f"ablation mode {mode!r} is not one of 'zero', 'mean'")
    if mode == "mean" and z_mean is None:
        raise IclabError("mean ablation needs z_mean: compute it with iclab.models.mean_z(model, inputs)")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    chosen = torch.zeros(L, H, dtype=torch.bool)
    for layer, head in heads:
        chosen[layer, head] = True
    if mode == "zero":
        iv = Intervention(head_scale=(~chosen).float())
    else:
        iv = Intervention(replace_mask=chosen, replace_z=z_mean)

    def make(layer: int):
        def fn(z: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            return edit_z(iv, layer, z, slice(0, z.shape[1]))

        return fn

    touched = sorted({layer for layer, _ in heads})
    with hooks(model, [(f"blocks.{layer}.attn.hook_z", make(layer)) for layer in touched]):
        yield model


@torch.no_grad()
def record_patterns(model: Transformer, inputs: torch.Tensor) -> torch.Tensor:
    """Every layer's attention pattern on ``inputs``: [L, B, H, T, S] (for pattern-preserving ablation)."""
    _, cache = run_with_cache(model, inputs, names=lambda n: n.endswith("attn.hook_pattern"))
    return cache.stack("attn.hook_pattern")


@contextlib.contextmanager
def frozen_patterns(model: Transformer, patterns: torch.Tensor) -> Iterator[Transformer]:
    """Within the block, every layer attends with the recorded ``patterns`` [L, B, H, T, S]
    whatever its queries and keys are (Olsson et al.'s pattern-preserving ablation:
    combine with :func:`ablate_heads` so an ablation changes values, never where heads look)."""
    L = model.cfg.n_layers
    if patterns.shape[0] != L:
        raise IclabError(f"patterns must have one entry per layer ({L}), got {patterns.shape[0]}")

    def make(layer: int):
        def fn(pattern: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            if pattern.shape != patterns[layer].shape:
                raise IclabError(f"recorded patterns have shape {tuple(patterns[layer].shape)}, this input gives {tuple(pattern.shape)}")
            return patterns[layer].to(pattern)

        return fn

    with hooks(model, [(f"blocks.{layer}.attn.hook_pattern", make(layer)) for layer in range(L)]):
        yield model
