"""How much memory a training config needs, checked against the device before a run folder is touched.

A batch of 10^8 prompts, or a context of 200,000 positions, is accepted by every field's own range check, then
fails deep inside an allocation (or swaps for minutes, deaf to Ctrl-C) after the run folder was written. The
estimate below is deliberately simple and errs high by a small factor: it is there to refuse configs that are
off by orders of magnitude, in one line, before anything is written.
"""

from __future__ import annotations

import os

import torch

from iclab.errors import IclabError

BYTES = 4  # float32
ADAM_COPIES = 4  # weights, gradients, AdamW's two moments
ACTIVATIONS_PER_LAYER = 16  # floats saved per position and per d_model for the backward pass (norms, q, k, v, z, residuals)
PATTERN_COPIES = 2  # an explicit attention path keeps the pattern [B, H, T, T] and its softmax for the backward pass


def parameter_count(model) -> int:
    """Parameters of a :class:`~iclab.models.ModelConfig`'s Transformer, built on the meta device (no memory)."""
    from iclab.models import Transformer

    with torch.device("meta"):
        return sum(p.numel() for p in Transformer(model).parameters())


def training_bytes(config) -> int:
    """Bytes one training step of ``config`` (a :class:`~iclab.train.RunConfig`) needs, roughly: weights, gradients and
    AdamW state, the activations kept for the backward pass, the attention patterns (as if materialised; the fused
    kernel needs less) and the output logits."""
    m, B = config.model, config.train.batch_size
    T, D, L = m.n_ctx, m.d_model, m.n_layers
    per_position = L * (ACTIVATIONS_PER_LAYER * D + (0 if m.attn_only else 2 * m.mlp_dim))
    out = m.d_vocab if m.input == "tokens" else m.d_output
    activations = B * T * (per_position + 3 * out)  # logits, their softmax and its gradient
    patterns = PATTERN_COPIES * B * m.n_heads * T * T * L
    return BYTES * (ADAM_COPIES * parameter_count(m) + activations + patterns)


def device_bytes(device: torch.device | str) -> int | None:
    """Total memory of ``device`` (a GPU's, or the machine's RAM for the CPU); None when unknown."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_fits(config, device: torch.device | str) -> None:
    """Refuse, in one line, a config whose training step cannot fit the device's memory."""
    need, have = training_bytes(config), device_bytes(device)
    if have is None or need <= have:
        return
    gb = 1024**3
    raise IclabError(
        f"this config needs about {need / gb:,.0f} GB to train (train.batch_size={config.train.batch_size} x "
        f"{config.model.n_ctx} positions x {config.model.n_layers} layers), more than the {have / gb:,.0f} GB of "
        f"{torch.device(device).type}: lower train.batch_size or the context length (e.g. task.n_points)")
