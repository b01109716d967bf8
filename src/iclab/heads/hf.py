"""Hugging Face causal LMs from a local folder, behind the :class:`HeadModel` interface.

Supported families (by ``config.model_type``), one adapter each in ``FAMILIES``:

    llama, mistral, qwen2, qwen3, stablelm, olmo   model.layers[l].self_attn.o_proj (z = its input)
    gemma, gemma2, gemma3_text                     the same, plus a norm after attention (post_attention_layernorm)
    olmo2                                          the same, with no norm before attention (norms after it)
    phi                                            model.layers[l].self_attn.dense
    phi3                                           o_proj; fused query/key/value projection qkv_proj
    gpt2                                           transformer.h[l].attn.c_proj  (Conv1D: y = x W + b)
    gpt_neox                                       gpt_neox.layers[l].attention.dense

Per-head z is the input of the output projection, reshaped [B, T, H, E]; W_O[h] is
the projection's slice for head h. Attention patterns come from the model's own
eager attention (``output_attentions``, soft-capping included); value vectors from
the value projection, expanded to query heads under grouped-query attention.
The direct OV path of a head runs embedding -> input norm -> W_V -> W_O ->
post-attention norm (where the family has one) -> final norm -> unembedding
(-> final-logit soft-capping where the family has it).
Nothing is ever downloaded: only ``local_files_only`` loading.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from iclab.errors import IclabError
from iclab.heads.base import HeadModel, ResidFn, ZFn
from iclab.heads.placement import dispatched, execution_device, onloaded, spread_over_gpus
from iclab.models.norms import frozen_norm, norm_at_input, norm_gain


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

ADAPTER_HELP = ("an adapter (iclab.heads.hf.FAMILIES) names the decoder layers, each layer's attention module and its output "
                "projection, how to read value vectors, the norms before and after attention and the final norm")


def _query_key_weights(attn: nn.Module, H: int, kv: int, E: int, D: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def _qkv_slice(attn: nn.Module, which: str, H: int, kv: int, E: int) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
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


def _register_frozen_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(FROZEN_ATTENTION, _frozen_attention)
    AttentionMaskInterface.register(FROZEN_ATTENTION, eager_mask)  # the mask is built but unused: the pattern decides


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


VOCAB_CHUNK = 8192  # tokens at a time when a quantity sums over the vocabulary
# The unembedding product of the direct OV path ([H N, D] x [D, V], the largest of the head scores) runs in bfloat16
# where the device multiplies it natively (iclab.device.fast_bf16): about 2x faster on AVX-512 BF16 CPUs. Checked on
# SmolLM2-135M: copying scores within 0.01 of float32's, the same top heads (tests/test_heads_hf.py, docs/pretrained.md).
OV_PRODUCT_BF16 = True
# The direct OV logits fold the final norm into each head's circuit (W_O centre diag(g) W_U^T, [E, V'] per head, once
# per layer; then [N, E] x [E, V'] per head in place of [N, D] x [D, V']: 2.3x fewer products on SmolLM2 at 200 source
# tokens) where the norm is g * centre(x) * scale + b to this relative error.
FOLD_FINAL_NORM = True
FOLD_TOLERANCE = 1e-4
# A layer's input norm shares the first layer's normalisation (U E_n read off one product for every layer) when norm(x)
# = n(x) g + b holds on sampled embeddings to this relative error (float32 rounding is about 1e-7).
SHARED_CORE_TOLERANCE = 1e-4
# The head scores' pass that records attention patterns (``patterns(ids, fast=True)``) runs its matrix products in
# bfloat16 (autocast) where the device has them: 2x faster on 2 AVX-512 BF16 cores for SmolLM2-135M; its detection and
# prefix-matching scores moved by at most 0.0023, the same top heads (benchmarks/transformer_lens.py prints the
# comparison; docs/pretrained.md). Patterns that are frozen back into the model, ablations, patching and logits stay
# in the model's own dtype.
PATTERNS_BF16 = True


def _reads_weights(method: Callable | None = None, *, ends: bool = True) -> Callable:
    """Runs ``method`` (whose first argument, when an int, is a layer) inside :meth:`HFHeadModel.reading_weights` for
    that layer (``ends``: and the model's embedding, final norm and unembedding): on a model placed across devices
    its offloaded weights are loaded for the call; otherwise nothing. ``@_reads_weights(ends=False)`` for a method
    that reads one layer's weights only (W_O, the circuits): a vocabulary's unembedding is not moved for it."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def call(self: "HFHeadModel", *args: Any, **kwargs: Any) -> Any:
            if not self._dispatched:
                return method(self, *args, **kwargs)
            layer = args[0] if args and isinstance(args[0], int) else kwargs.get("layer")
            with self.reading_weights(*(() if layer is None else (layer,)), ends=ends):
                return method(self, *args, **kwargs)

        return call

    return wrap if method is None else wrap(method)


class HFHeadModel(HeadModel):
    """A ``transformers`` causal LM (already built) with its tokenizer (optional for id-only use)."""

    def __init__(self, model: nn.Module, tokenizer: Any = None):
        super().__init__()
        cfg = model.config
        if cfg.model_type not in FAMILIES:
            raise IclabError(f"model type {cfg.model_type!r} is not supported; supported: {', '.join(FAMILIES)}. "
                             f"To add it, {ADAPTER_HELP}")
        self.family = FAMILIES[cfg.model_type]
        self.model = model  # left as the caller had it: passes run in inference() mode
        self.tokenizer = tokenizer
        self.layers = _get(model, self.family.layers)
        self.n_layers = len(self.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_model = cfg.hidden_size
        self.d_head = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise IclabError(f"{self.n_heads} query heads do not split into {self.n_kv_heads} key/value groups")
        self.bos_id = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else getattr(cfg, "bos_token_id", None)
        self._unembedding: tuple | None = None  # (columns, [V', D] weight, [V'] bias or None) of the last ov_logits
        self._folded: tuple | None = None  # (layer, unembedding rows, [H, E, V'] circuits, [V'] offset) of the last ov_logits
        self._shared_core: tuple | None = None  # (reference norm's gain and bias, U n(E), U 1) or () where not shared
        self._dispatched = dispatched(model)  # placed by a device map (several devices, offloaded weights)

    @property
    def device(self) -> torch.device:
        """Where token ids go in: the embedding's device (with a device map, the first block's)."""
        if self._dispatched:
            return execution_device(self.model.get_input_embeddings())
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def reading_weights(self, *layers: int, ends: bool = True) -> Iterator[None]:
        if not self._dispatched:
            yield
            return
        modules = [self.layers[i] for i in layers]
        if ends:  # and the first layer's input norm, which the OV core's shared normalisation reads
            modules += [self.model.get_input_embeddings(), _get(self.model, self.family.final_norm),
                        self.model.get_output_embeddings()]
            modules += [] if self.family.input_norm is None else [getattr(self.layers[0], self.family.input_norm)]
        with onloaded(modules, self.device):
            yield

    def _attn(self, layer: int) -> nn.Module:
        return getattr(self.layers[layer], self.family.attn)

    def _layer_module(self, layer: int) -> nn.Module:
        return self.layers[layer]

    def _proj(self, layer: int) -> nn.Module:
        return getattr(self._attn(layer), self.family.out_proj)

    # ------------------------------------------------------------------ tokens
    def encode(self, text: str, bos: bool = True) -> list[int]:
        if self.tokenizer is None:
            raise IclabError("this model was loaded without a tokenizer; pass token ids instead of text")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos:
            if self.bos_id is None:
                raise IclabError("the tokenizer has no BOS token; build prompts with bos=False")
            ids = [self.bos_id, *ids]
        return list(ids)

    def decode(self, ids: list[int]) -> str:
        if self.tokenizer is None:
            raise IclabError("this model was loaded without a tokenizer; it cannot turn token ids into text")
        return self.tokenizer.decode(ids)

    # ------------------------------------------------------------------ weights
    @_reads_weights(ends=False)
    def W_O(self, layer: int) -> torch.Tensor:
        W = self._proj(layer).weight.detach()
        H, E, D = self.n_heads, self.d_head, self.d_model
        if self.family.conv1d:  # [H*E, D]
            return W.view(H, E, D)
        return W.view(D, H, E).permute(1, 2, 0)  # Linear [D, H*E] -> [H, E, D]

    @_reads_weights(ends=False)
    def b_O(self, layer: int) -> torch.Tensor:
        b = self._proj(layer).bias
        return torch.zeros(self.d_model, device=self.device) if b is None else b.detach()

    # ------------------------------------------------------------------ hooks
    def _hook_z(self, layer: int, fn: ZFn) -> Any:
        H, E = self.n_heads, self.d_head

        def pre(mod: nn.Module, args: tuple) -> tuple:
            x = args[0]
            z = fn(x.view(*x.shape[:-1], H, E))
            return (z.reshape(x.shape).to(x), *args[1:])

        return self._proj(layer).register_forward_pre_hook(pre)

    def _hook_resid(self, layer: int, fn: ResidFn) -> Any:
        if layer == self.n_layers:  # the final norm's input
            norm = _get(self.model, self.family.final_norm)
            return norm.register_forward_pre_hook(lambda mod, args: (fn(args[0]).to(args[0]), *args[1:]))

        def pre(mod: nn.Module, args: tuple, kwargs: dict) -> tuple:
            if args:
                return (fn(args[0]).to(args[0]), *args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = fn(kwargs["hidden_states"]).to(kwargs["hidden_states"])
            return args, kwargs

        return self.layers[layer].register_forward_pre_hook(pre, with_kwargs=True)

    def _hook_attn_out(self, layer: int, fn: ResidFn) -> Any:
        block = self.layers[layer]
        # families with a norm after attention add that norm's output to the residual stream; the others the attention's
        module = getattr(block, self.family.post_attn_norm) if self.family.post_attn_norm else self._attn(layer)

        def hook(mod: nn.Module, args: tuple, out: Any) -> Any:
            if isinstance(out, tuple):
                return (fn(out[0]).to(out[0]), *out[1:])
            return fn(out).to(out)

        return module.register_forward_hook(hook)

    @property
    def parallel_blocks(self) -> bool:
        cfg = self.model.config
        return cfg.model_type == "phi" or bool(getattr(cfg, "use_parallel_residual", False))

    def _hook_mlp_out(self, layer: int, fn: ResidFn) -> Any:
        block = self.layers[layer]
        name = self.family.post_mlp_norm or self.family.mlp  # what the residual stream receives
        return getattr(block, name).register_forward_hook(lambda mod, args, out: fn(out).to(out))

    def _hook_qkv(self, layer: int, which: str, fn: ZFn) -> Any:
        module, part = _qkv_slice(self._attn(layer), which, self.n_heads, self.n_kv_heads, self.d_head)

        def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            view = part(out)
            view.copy_(fn(view.clone()).to(out))
            return out

        return module.register_forward_hook(hook)

    def final_norm(self) -> nn.Module:
        return _get(self.model, self.family.final_norm)

    @_reads_weights
    def unembed_rows(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head = self.model.get_output_embeddings()
        tokens = tokens.to(self.device)
        bias = torch.zeros(len(tokens), device=self.device) if head.bias is None else head.bias.detach()[tokens].float()
        return head.weight.detach()[tokens].float(), bias

    @_reads_weights(ends=False)
    def head_writes(self, layer: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        writes, rest = super().head_writes(layer, z)
        if self.family.post_attn_norm is None:
            return writes, rest
        norm = getattr(self.layers[layer], self.family.post_attn_norm)
        f, bias = frozen_norm(norm, writes.sum(1) + rest)
        return f(writes), f(rest.unsqueeze(1))[:, 0] + bias

    # ------------------------------------------------------------------ passes
    def _forward(self, ids: torch.Tensor, past: Any = None, use_cache: bool = False, last: bool = False,
                 positions: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        # the key/value cache is `cache` in recent transformers (5.2x; `past_key_values` is deprecated there and goes
        # in 5.40) and `past_key_values` before: use whichever this model's forward takes
        params = inspect.signature(self.model.forward).parameters
        name = "cache" if "cache" in params else "past_key_values"
        keep = {}  # the unembedding of the positions read only, where the family's forward takes logits_to_keep
        if "logits_to_keep" in params and (last or positions is not None):
            keep = {"logits_to_keep": 1 if last else positions.to(ids.device)}
        out = self.model(input_ids=ids, use_cache=use_cache, **{name: past}, **keep)
        logits = out.logits.float()
        if not keep and (last or positions is not None):
            logits = logits[:, -1:] if last else logits[:, positions.to(logits.device)]
        return logits, (out[name] if use_cache else None)

    @contextlib.contextmanager
    def _attention(self, implementation: str) -> Iterator[None]:
        """Within the block, the model's config and every attention module's run ``implementation``; restored after."""
        configs = list({id(c): c for c in [self.model.config, *(self._attn(i).config for i in range(self.n_layers))]}.values())
        saved = [c._attn_implementation for c in configs]
        try:
            for c in configs:
                c._attn_implementation = implementation
            yield
        finally:
            for c, impl in zip(configs, saved):
                c._attn_implementation = impl

    @torch.no_grad()
    def patterns(self, ids: torch.Tensor, fast: bool = False) -> torch.Tensor:
        # only eager attention returns its weights; the backbone alone (no [B, T, V] logits: 1.7 GB for 16 x 101 tokens
        # of a 262k vocabulary); when fast, its matrix products in bfloat16 where the device has them (PATTERNS_BF16)
        from iclab.device import fast_bf16

        bf16 = fast and PATTERNS_BF16 and self.device.type in ("cpu", "cuda") and fast_bf16(self.device)
        with self._attention("eager"), self.inference(), torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
            out = self.model.base_model(input_ids=ids.to(self.device), output_attentions=True)
        return torch.stack([a.float().to(self.device) for a in out.attentions])

    @contextlib.contextmanager
    def frozen_patterns(self, patterns: torch.Tensor) -> Iterator["HFHeadModel"]:
        """Every layer attends with ``patterns`` [L, B, H, T, S] (from :meth:`patterns`): the family's attention runs an
        attention function that multiplies the recorded pattern into the values (registered with ``transformers``'
        AttentionInterface), so queries and keys no longer decide where a head looks."""
        if patterns.shape[0] != self.n_layers:
            raise IclabError(f"patterns must have one entry per layer ({self.n_layers}), got {patterns.shape[0]}")
        _register_frozen_attention()
        pinned = {id(self._attn(i)): patterns[i].to(self.device) for i in range(self.n_layers)}
        saved = dict(_FROZEN)
        _FROZEN.clear()
        _FROZEN.update(pinned)
        try:
            with self._attention(FROZEN_ATTENTION):
                yield self
        finally:
            _FROZEN.clear()
            _FROZEN.update(saved)

    @torch.no_grad()
    def _unembedding_rows(self, columns: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The unembedding's [V', D] weight and [V'] bias (None: no bias) for ``columns`` (None: every token), in the
        dtype of the OV product; kept for the next call with the same columns (a scoring pass asks for the same
        probe vocabulary layer after layer; iclab's analyses never change the weights, whose copy this is)."""
        cached = self._unembedding
        if cached is not None and (cached[0] is None) == (columns is None) and (
                columns is None or torch.equal(cached[0], columns.to(cached[0].device))):
            return cached[1], cached[2]
        from iclab.device import fast_bf16

        unembed = self.model.get_output_embeddings()
        weight, bias = unembed.weight, getattr(unembed, "bias", None)
        if columns is not None:
            rows = columns.to(weight.device)
            weight, bias = weight[rows], None if bias is None else bias[rows]
        dtype = torch.bfloat16 if OV_PRODUCT_BF16 and fast_bf16(weight.device) else torch.float32
        weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
        self._unembedding = (columns, weight, bias)
        return weight, bias

    @torch.no_grad()
    @_reads_weights
    def ov_logits(self, layer: int, tokens: torch.Tensor, columns: torch.Tensor | None = None,
                  float32: bool = True) -> torch.Tensor:
        x = self.model.get_input_embeddings()(tokens.to(self.device))  # [N, D]
        final = _get(self.model, self.family.final_norm)
        group = self.n_heads // self.n_kv_heads
        block = self.layers[layer]
        normed = x.unsqueeze(0) if self.family.input_norm is None else getattr(block, self.family.input_norm)(x.unsqueeze(0))
        v = self.family.values(self._attn(layer), normed, self.n_kv_heads, self.d_head)[0]  # [N, H_kv, E]
        v = v.repeat_interleave(group, dim=1).transpose(0, 1)  # [H, N, E]
        result = torch.einsum("hne,hed->hnd", v, self.W_O(layer))  # [H, N, D]
        if self.family.post_attn_norm is not None:
            result = getattr(block, self.family.post_attn_norm)(result)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        float32 = float32 or cap is not None
        logits = (self._folded_logits(layer, v, result, columns, float32)
                  if FOLD_FINAL_NORM and self.family.post_attn_norm is None else None)
        if logits is None:
            weight, bias = self._unembedding_rows(columns)
            logits = torch.nn.functional.linear(final(result).to(weight.dtype), weight, bias)  # [H, N, V']
        logits = logits.float() if float32 else logits
        return logits if cap is None else cap * torch.tanh(logits / cap)

    def _folded_logits(self, layer: int, v: torch.Tensor, result: torch.Tensor, columns: torch.Tensor | None,
                       float32: bool) -> torch.Tensor | None:
        """The direct OV logits [H, N, V'] as (v M_h) * scale + c, the final norm folded into each head's circuit
        M_h = W_O[h] centre diag(g) W_U^T [E, V'] (one per layer, kept for the layer's next chunk of tokens) and its
        scale read off the norm's own output for each row: [E, V'] per head in place of [D, V'] per token. None where
        the final norm is not of that form (:class:`~iclab.models.norms.NormAtInput`'s error above the tolerance)."""
        H, N, D = result.shape
        at = norm_at_input(_get(self.model, self.family.final_norm), result.reshape(H * N, D))
        if at.error > FOLD_TOLERANCE:
            return None
        weight, bias = self._unembedding_rows(columns)
        cached = self._folded
        if cached is None or cached[0] != layer or cached[1] is not weight:
            W_O = self.W_O(layer).float()  # [H, E, D]
            E = W_O.shape[1]
            circuit = torch.nn.functional.linear((at.centre(W_O) * at.gain).reshape(H * E, D).to(weight.dtype), weight)
            offset = torch.nn.functional.linear(at.bias.to(weight.dtype), weight, bias).float()  # [V']
            self._folded = cached = (layer, weight, circuit.view(H, E, -1), offset if offset.any() else None)
        circuit, offset = cached[2], cached[3]
        logits = torch.bmm((v.float() * at.scale.view(H, N, 1)).to(circuit.dtype), circuit)  # the scale is per row
        return logits if offset is None and not float32 else logits.float().add_(0 if offset is None else offset)

    @torch.no_grad()
    @_reads_weights
    def ov_factors(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        D = self.d_model
        embed = self.model.get_input_embeddings()
        ids = torch.arange(self.model.config.vocab_size, device=self.device)
        block = self.layers[layer]
        norm = (lambda x: x) if self.family.input_norm is None else getattr(block, self.family.input_norm)
        E_n = torch.cat([norm(embed(ids[i : i + VOCAB_CHUNK]).unsqueeze(0))[0] for i in range(0, len(ids), VOCAB_CHUNK)]).float()
        U = self.model.get_output_embeddings().weight.T.float()  # [D, V]
        return E_n, self._value_weights(layer).float(), self.W_O(layer).float(), norm_gain(_get(self.model, self.family.final_norm), D).unsqueeze(1) * U

    @torch.no_grad()
    @_reads_weights
    def ov_core(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """U E_n summed over the vocabulary in chunks of :data:`VOCAB_CHUNK` tokens: a 262k vocabulary never holds a
        [V, D] copy of the embeddings or of the unembedding (each 0.7 GB at Gemma 3 270M's size). Where the layer's
        input norm is the first layer's up to its own gain and bias (checked, :meth:`_norm_shares_core`), U E_n is
        read off one product shared by every layer instead of a [D, V] x [V, D] product per layer."""
        K = self._shared_ov_core(layer)
        if K is None:
            norm = (lambda x: x) if self.family.input_norm is None else getattr(self.layers[layer], self.family.input_norm)
            K = self._unembed_times(norm)
        return self._value_weights(layer).float(), self.W_O(layer).float(), K

    def _unembed_times(self, norm: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """[D, D]: (g_f U) norm(E), the unembedding (final norm's gain g_f folded in) times the normed embeddings."""
        D = self.d_model
        embed, unembed = self.model.get_input_embeddings(), self.model.get_output_embeddings().weight  # [V, D]
        gain = norm_gain(_get(self.model, self.family.final_norm), D).float()  # [D]
        K = torch.zeros(D, D, device=self.device)
        for i in range(0, self.model.config.vocab_size, VOCAB_CHUNK):
            ids = torch.arange(i, min(i + VOCAB_CHUNK, self.model.config.vocab_size), device=self.device)
            E_n = norm(embed(ids).unsqueeze(0))[0].float()  # [c, D]
            K += (gain.unsqueeze(1) * unembed[ids].T.float()) @ E_n
        return K

    def _gain_and_bias(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        norm = getattr(self.layers[layer], self.family.input_norm)
        bias = getattr(norm, "bias", None)
        gain = norm_gain(norm, self.d_model).to(self.device)
        return gain, torch.zeros_like(gain) if bias is None else bias.detach().float()

    @torch.no_grad()
    def _norm_shares_core(self, layer: int) -> bool:
        """Whether the layer's input norm is n(x) g + b with the first layer's n (n(x) = (norm_0(x) - b_0) / g_0), on
        embedding rows spread over the vocabulary, to float32 rounding: true of LayerNorm and RMSNorm (every family's
        epsilon and upcast being the same in each layer), checked rather than assumed."""
        g0, b0 = self._shared_core[0]
        g, b = self._gain_and_bias(layer)
        rows = torch.linspace(0, self.model.config.vocab_size - 1, 256, device=self.device).long()
        x = self.model.get_input_embeddings()(rows).unsqueeze(0)
        first = getattr(self.layers[0], self.family.input_norm)(x)[0].float()
        actual = getattr(self.layers[layer], self.family.input_norm)(x)[0].float()
        predicted = (first - b0) / g0 * g + b
        return bool((predicted - actual).abs().max() <= SHARED_CORE_TOLERANCE * actual.abs().max().clamp_min(1e-30))

    def _shared_ov_core(self, layer: int) -> torch.Tensor | None:
        """U E_n = (U n(E)) diag(g) + (U 1) b^T for a layer whose input norm is n(x) g + b (None: not of that form)."""
        if self.family.input_norm is None:
            return None
        if self._shared_core is None:
            g0, b0 = self._gain_and_bias(0)
            if bool((g0.abs() < 1e-6).any()):  # n(x) cannot be read off a norm with a zero gain
                self._shared_core = ()
            else:
                first = getattr(self.layers[0], self.family.input_norm)
                U_n = self._unembed_times(lambda x: (first(x).float() - b0) / g0)
                final_gain = norm_gain(_get(self.model, self.family.final_norm), self.d_model).float()
                unembed = self.model.get_output_embeddings().weight[: self.model.config.vocab_size]
                U_1 = final_gain * unembed.sum(0, dtype=torch.float32)  # [D]: U 1, the sum over the vocabulary
                self._shared_core = ((g0, b0), U_n, U_1)
        if not self._shared_core or not self._norm_shares_core(layer):
            return None
        (_, _), U_n, U_1 = self._shared_core
        g, b = self._gain_and_bias(layer)
        return U_n * g + U_1.unsqueeze(1) * b

    @torch.no_grad()
    def _value_weights(self, layer: int) -> torch.Tensor:
        """[H, D, E]: the value projection of each query head (biases left out), read through the family's own values."""
        D, E, kv, attn = self.d_model, self.d_head, self.n_kv_heads, self._attn(layer)
        eye = torch.eye(D, device=self.device, dtype=self.model.get_input_embeddings().weight.dtype).unsqueeze(0)
        W_V = self.family.values(attn, eye, kv, E)[0] - self.family.values(attn, torch.zeros_like(eye[:, :1]), kv, E)[0]
        return W_V.permute(1, 0, 2).repeat_interleave(self.n_heads // kv, dim=0)  # [D, kv, E] -> [H, D, E]

    @torch.no_grad()
    @_reads_weights(ends=False)
    def circuit_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head W_Q, W_K, W_V [H, D, E] with the input norm's gain folded in, and W_O [H, E, D] (float64); rotary
        embeddings are left out (the direct QK circuit at relative distance 0). Families that normalise queries and keys
        (q_norm / k_norm) have no linear QK circuit and are refused."""
        attn, cfg = self._attn(layer), self.model.config
        if any(getattr(attn, name, None) is not None for name in ("q_norm", "k_norm", "q_layernorm", "k_layernorm")):
            raise IclabError(f"{cfg.model_type}: its queries and keys are normalised (q_norm / k_norm), so no linear QK circuit "
                             "can be read off its weights")
        H, kv, E, D = self.n_heads, self.n_kv_heads, self.d_head, self.d_model
        Wq, Wk = _query_key_weights(attn, H, kv, E, D)  # [H*E, D], [kv*E, D] as Linear weights (out, in)
        norm = None if self.family.input_norm is None else getattr(self.layers[layer], self.family.input_norm)
        g = (torch.ones(D) if norm is None else norm_gain(norm, D)).to(self.device).double().view(1, D, 1)
        W_Q = g * Wq.double().view(H, E, D).transpose(1, 2)
        W_K = g * Wk.double().view(kv, E, D).transpose(1, 2).repeat_interleave(H // kv, dim=0)
        return W_Q, W_K, g * self._value_weights(layer).double(), self.W_O(layer).double()

    @_reads_weights
    def embedding(self) -> torch.Tensor:
        """The token embedding matrix (a family's constant embedding scale, Gemma's sqrt(D), left out: circuits' ratios
        and eigenvalue signs do not depend on it)."""
        return self.model.get_input_embeddings().weight.detach().double()

    @property
    def d_vocab(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    @torch.no_grad()
    @_reads_weights
    def resid_logits(self, resid: torch.Tensor) -> torch.Tensor:
        final = _get(self.model, self.family.final_norm)
        unembed = self.model.get_output_embeddings()
        logits = unembed(final(resid.to(unembed.weight))).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return logits if cap is None else cap * torch.tanh(logits / cap)

    def probe_vocab(self) -> torch.Tensor:
        V = self.model.config.vocab_size
        special = set(self.tokenizer.all_special_ids) if self.tokenizer is not None else set()
        if self.bos_id is not None:
            special.add(self.bos_id)
        size = min(V, len(self.tokenizer)) if self.tokenizer is not None else V
        return torch.tensor([i for i in range(size) if i not in special])

    @torch.no_grad()
    def values(self, ids: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor | None] = [None] * self.n_layers
        handles = []
        group = self.n_heads // self.n_kv_heads

        def make(layer: int):
            def grab(mod, args, kwargs):
                x = args[0] if args else kwargs["hidden_states"]
                v = self.family.values(mod, x, self.n_kv_heads, self.d_head)  # [B, S, H_kv, E]
                captured[layer] = v.repeat_interleave(group, dim=2).float().to(self.device)

            return grab

        try:
            for layer in range(self.n_layers):
                handles.append(self._attn(layer).register_forward_pre_hook(make(layer), with_kwargs=True))
            with self.inference():
                self.model(input_ids=ids.to(self.device))
        finally:
            for h in handles:
                h.remove()
        return torch.stack(captured)


def load_hf(path: Path | str, device: torch.device | str = "cpu", dtype: str = "float32", device_map: str | dict | None = None,
            max_memory: dict | None = None) -> HFHeadModel:
    """Load a causal LM and its tokenizer from a local folder (never from the hub).

    ``device``: where the model goes whole; ``cuda`` without an index (what ``--device auto`` and ``--device cuda``
    give) spreads a model whose weights do not fit the GPU's free memory over every GPU here, then CPU and disk
    (:func:`iclab.heads.placement.spread_over_gpus`); ``cuda:N`` keeps it on that GPU. ``device_map`` / ``max_memory``:
    ``accelerate``'s placement, given explicitly (e.g. ``device_map="auto", max_memory={"cpu": "2GiB"}``: the blocks
    past 2 GiB are read from disk during each pass); every head analysis runs on a model so placed."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise IclabError("Hugging Face models need the 'hf' extra: pip install 'iclab[hf]'") from e
    folder = Path(path)
    if not folder.is_dir():
        raise IclabError(f"{folder}: no such folder (iclab loads models from local folders only, never from the hub)")
    if not (folder / "config.json").is_file():
        raise IclabError(f"{folder}: no config.json; a Hugging Face model folder holds config.json, weights and tokenizer files")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise IclabError(f"{folder}: no weights (*.safetensors or *.bin) in the folder")
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    if not any((folder / name).is_file() for name in tokenizer_files):
        raise IclabError(f"{folder}: no tokenizer files (one of {', '.join(tokenizer_files)})")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise IclabError(f"dtype {dtype!r} is not one of {', '.join(dtypes)}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = torch.device(device)
    placement = {} if device_map is None else {"device_map": device_map, "max_memory": max_memory}
    if device_map is None and device.type == "cuda" and device.index is None and torch.cuda.device_count() > 0:
        placement = spread_over_gpus(folder, dtypes[dtype]) or {}
    verbosity, placing = hf_logging.get_verbosity(), logging.getLogger("accelerate.big_modeling")
    level = placing.level
    if placement:  # "some parameters are on the meta device ...": the offloading asked for
        hf_logging.set_verbosity_error()
        placing.setLevel(logging.ERROR)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtypes[dtype], **placement).eval()
        for p in model.parameters():  # iclab owns this copy: analyses never train its weights
            p.requires_grad_(False)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except pickle.UnpicklingError as e:
        raise IclabError(f"{folder}: its pickled weights (*.bin) hold objects that torch's restricted loader "
                         f"(weights_only) refuses to unpickle; iclab never runs pickled code: convert them to safetensors "
                         f"(torch: {str(e).split('.')[0]})") from None
    except (OSError, ValueError) as e:
        raise IclabError(f"{folder}: could not load it as a causal LM with a tokenizer: {str(e).splitlines()[0]}") from None
    except Exception as e:  # safetensors' own error type (a truncated or damaged file) is not an OSError
        if type(e).__name__ != "SafetensorError":
            raise
        raise IclabError(f"{folder}: its safetensors weights are damaged or incomplete ({str(e).splitlines()[0]}); "
                         "copy or fetch them again (a catalogue model: iclab models get NAME --force)") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        placing.setLevel(level)
    return HFHeadModel(model if placement else model.to(device), tokenizer)
