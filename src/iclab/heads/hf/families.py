"""Where each Hugging Face family keeps what a head analysis needs: one :class:`Family` adapter per
``config.model_type`` in :data:`FAMILIES`, and the readers of fused query / key / value projections.

Adding a family is an entry here (and a tiny model of it in ``tests/test_heads_hf.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from iclab.errors import IclabError


@dataclass(frozen=True)
class Family:
    """Where a family keeps what a head analysis needs. A new family needs exactly these fields."""

    layers: str  # attribute path of the decoder layers (ModuleList)
    attn: str  # attribute of a layer: its attention module
    out_proj: str  # attribute of the attention module: the output projection (Linear, or Conv1D)
    conv1d: bool  # GPT-2's Conv1D stores the weight as [in, out]
    values: Callable[[nn.Module, torch.Tensor, int, int], torch.Tensor]  # (attn, normed hidden [B,S,D], H_kv, E) -> [B,S,H_kv,E]
    final_norm: str  # attribute path of the norm before the unembedding
    input_norm: str | None  # attribute of a layer: the norm before attention (None: there is none)
    post_attn_norm: str | None = None  # attribute of a layer: a norm on the attention output before the residual add
    post_mlp_norm: str | None = None  # attribute of a layer: a norm on the MLP output before the residual add
    mlp: str = "mlp"  # attribute of a layer: its MLP


def _v_llama(attn: nn.Module, x: torch.Tensor, kv: int, E: int) -> torch.Tensor:
    return attn.v_proj(x).view(*x.shape[:-1], kv, E)


def _v_gpt2(attn: nn.Module, x: torch.Tensor, kv: int, E: int) -> torch.Tensor:
    D = x.shape[-1]
    return attn.c_attn(x)[..., 2 * D :].view(*x.shape[:-1], kv, E)


def _v_neox(attn: nn.Module, x: torch.Tensor, kv: int, E: int) -> torch.Tensor:
    return attn.query_key_value(x).view(*x.shape[:-1], kv, 3 * E)[..., 2 * E :]  # per head [q | k | v]


def _v_phi3(attn: nn.Module, x: torch.Tensor, kv: int, E: int) -> torch.Tensor:
    return attn.qkv_proj(x)[..., -kv * E :].view(*x.shape[:-1], kv, E)  # fused [q (H*E) | k (kv*E) | v (kv*E)]


LLAMA_LIKE = Family("model.layers", "self_attn", "o_proj", False, _v_llama, "model.norm", "input_layernorm")
GEMMA_LIKE = Family("model.layers", "self_attn", "o_proj", False, _v_llama, "model.norm", "input_layernorm",
                    post_attn_norm="post_attention_layernorm", post_mlp_norm="post_feedforward_layernorm")
FAMILIES: dict[str, Family] = {
    "llama": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "qwen3": LLAMA_LIKE,
    "stablelm": LLAMA_LIKE,
    "olmo": LLAMA_LIKE,
    "gemma": LLAMA_LIKE,  # its norm after attention is the MLP's input norm; the scaled embedding is the module's own
    "gemma2": GEMMA_LIKE,
    "gemma3_text": GEMMA_LIKE,
    "olmo2": Family("model.layers", "self_attn", "o_proj", False, _v_llama, "model.norm", None,
                    post_attn_norm="post_attention_layernorm", post_mlp_norm="post_feedforward_layernorm"),
    "phi": Family("model.layers", "self_attn", "dense", False, _v_llama, "model.final_layernorm", "input_layernorm"),
    "phi3": Family("model.layers", "self_attn", "o_proj", False, _v_phi3, "model.norm", "input_layernorm"),
    "gpt2": Family("transformer.h", "attn", "c_proj", True, _v_gpt2, "transformer.ln_f", "ln_1"),
    "gpt_neox": Family("gpt_neox.layers", "attention", "dense", False, _v_neox, "gpt_neox.final_layer_norm", "input_layernorm"),
}

ADAPTER_HELP = ("an adapter (iclab.heads.hf.families.FAMILIES) names the decoder layers, each layer's attention module and its output "
                "projection, how to read value vectors, the norms before and after attention and the final norm")


def query_key_weights(attn: nn.Module, H: int, kv: int, E: int, D: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The query [H*E, D] and key [kv*E, D] projections (Linear layout: out, in) of an attention module: separate
    q_proj / k_proj, GPT-2's Conv1D c_attn [D, 3D], GPT-NeoX's per-head [q | k | v] rows, Phi-3's fused qkv_proj."""
    if hasattr(attn, "q_proj") and hasattr(attn, "k_proj"):
        return attn.q_proj.weight.detach(), attn.k_proj.weight.detach()
    if hasattr(attn, "c_attn"):
        W = attn.c_attn.weight.detach()  # [D, 3D], y = x W
        return W[:, :D].T, W[:, D : 2 * D].T
    if hasattr(attn, "query_key_value"):
        W = attn.query_key_value.weight.detach().view(H, 3 * E, D)
        return W[:, :E].reshape(H * E, D), W[:, E : 2 * E].reshape(H * E, D)
    if hasattr(attn, "qkv_proj"):
        W = attn.qkv_proj.weight.detach()  # [(H + 2 kv) E, D]
        return W[: H * E], W[H * E : (H + kv) * E]
    raise IclabError(f"{type(attn).__name__}: no query / key projection iclab knows (q_proj and k_proj, c_attn, "
                     "query_key_value or qkv_proj)")


def qkv_slice(attn: nn.Module, which: str, H: int, kv: int, E: int) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The module whose output holds ``which`` ("q", "k" or "v") and a function giving that part of its output as a
    view [B, T, heads, E] (writing into the view writes into the output): separate q_proj / k_proj / v_proj, GPT-2's
    c_attn [q | k | v], GPT-NeoX's per-head [q | k | v], Phi-3's fused [q (H E) | k (kv E) | v (kv E)]."""
    i = "qkv".index(which)
    if hasattr(attn, f"{which}_proj"):
        n = H if which == "q" else kv
        return getattr(attn, f"{which}_proj"), lambda out: out.view(*out.shape[:-1], n, E)
    if hasattr(attn, "c_attn"):
        return attn.c_attn, lambda out: out[..., i * H * E : (i + 1) * H * E].view(*out.shape[:-1], H, E)
    if hasattr(attn, "query_key_value"):
        return attn.query_key_value, lambda out: out.view(*out.shape[:-1], H, 3 * E)[..., i * E : (i + 1) * E]
    if hasattr(attn, "qkv_proj"):
        start, n = (0, H) if which == "q" else ((H + (i - 1) * kv) * E, kv)
        return attn.qkv_proj, lambda out: out[..., start : start + n * E].view(*out.shape[:-1], n, E)
    raise IclabError(f"{type(attn).__name__}: no query / key / value projection iclab knows (q_proj, k_proj and v_proj, "
                     "c_attn, query_key_value or qkv_proj)")



def get_path(obj: Any, path: str) -> Any:
    """The attribute at a dotted ``path`` of ``obj`` ("model.layers")."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
