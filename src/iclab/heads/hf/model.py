"""The Hugging Face causal LM behind the :class:`~iclab.heads.base.HeadModel` interface: weights, hooks, passes and
its circuits (:mod:`iclab.heads.hf.circuits`), read through the family's adapter (:mod:`iclab.heads.hf.families`)."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator

import torch
import torch.nn as nn

from iclab.errors import IclabError
from iclab.heads.base import HeadModel, ResidFn, ZFn
from iclab.heads.hf.circuits import DirectCircuits
from iclab.heads.hf.families import ADAPTER_HELP, FAMILIES, get_path, qkv_slice
from iclab.heads.hf.frozen import FROZEN_ATTENTION, pinned
from iclab.heads.placement import dispatched, execution_device, onloaded, reads_weights
from iclab.models.norms import frozen_norm

# The head scores' pass that records attention patterns (``patterns(ids, fast=True)``) runs its matrix products in
# bfloat16 (autocast) where the device has them: 2x faster on 2 AVX-512 BF16 cores for SmolLM2-135M; its detection and
# prefix-matching scores moved by at most 0.0023, the same top heads (benchmarks/transformer_lens.py prints the
# comparison; docs/pretrained.md). Patterns that are frozen back into the model, ablations, patching and logits stay
# in the model's own dtype.
PATTERNS_BF16 = True


class HFHeadModel(DirectCircuits, HeadModel):
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
        self.layers = get_path(model, self.family.layers)
        self.n_layers = len(self.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_model = cfg.hidden_size
        self.d_head = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise IclabError(f"{self.n_heads} query heads do not split into {self.n_kv_heads} key/value groups")
        self.bos_id = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else getattr(cfg, "bos_token_id", None)
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
            modules += [self.model.get_input_embeddings(), get_path(self.model, self.family.final_norm),
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
    @reads_weights(ends=False)
    def W_O(self, layer: int) -> torch.Tensor:
        W = self._proj(layer).weight.detach()
        H, E, D = self.n_heads, self.d_head, self.d_model
        if self.family.conv1d:  # [H*E, D]
            return W.view(H, E, D)
        return W.view(D, H, E).permute(1, 2, 0)  # Linear [D, H*E] -> [H, E, D]

    @reads_weights(ends=False)
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
            norm = get_path(self.model, self.family.final_norm)
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
        module, part = qkv_slice(self._attn(layer), which, self.n_heads, self.n_kv_heads, self.d_head)

        def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            view = part(out)
            view.copy_(fn(view.clone()).to(out))
            return out

        return module.register_forward_hook(hook)

    def final_norm(self) -> nn.Module:
        return get_path(self.model, self.family.final_norm)

    @reads_weights
    def unembed_rows(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head = self.model.get_output_embeddings()
        tokens = tokens.to(self.device)
        bias = torch.zeros(len(tokens), device=self.device) if head.bias is None else head.bias.detach()[tokens].float()
        return head.weight.detach()[tokens].float(), bias

    @reads_weights(ends=False)
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
        with pinned({id(self._attn(i)): patterns[i].to(self.device) for i in range(self.n_layers)}), \
                self._attention(FROZEN_ATTENTION):
            yield self

    @reads_weights
    def embedding(self) -> torch.Tensor:
        """The token embedding matrix (a family's constant embedding scale, Gemma's sqrt(D), left out: circuits' ratios
        and eigenvalue signs do not depend on it)."""
        return self.model.get_input_embeddings().weight.detach().double()

    @property
    def d_vocab(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    @torch.no_grad()
    @reads_weights
    def resid_logits(self, resid: torch.Tensor) -> torch.Tensor:
        final = get_path(self.model, self.family.final_norm)
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
