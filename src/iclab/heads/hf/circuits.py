"""The circuits of a Hugging Face model read off its weights: the direct OV path's logits (the final norm folded in
where it is of that form), the OV factors and core summed over the vocabulary in chunks, and the per-head QK / OV
weights. A mixin of :class:`~iclab.heads.hf.model.HFHeadModel`, which supplies the model, its family adapter, its
layers and ``W_O``."""

from __future__ import annotations

from typing import Callable

import torch

from iclab.errors import IclabError
from iclab.heads.hf.families import get_path, query_key_weights
from iclab.heads.placement import reads_weights
from iclab.models.norms import norm_at_input, norm_gain

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


class DirectCircuits:
    """Weight-reading methods of :class:`~iclab.heads.hf.model.HFHeadModel` (see the module docstring)."""

    _unembedding: tuple | None = None  # (columns, [V', D] weight, [V'] bias or None) of the last ov_logits
    _folded: tuple | None = None  # (layer, unembedding rows, [H, E, V'] circuits, [V'] offset) of the last ov_logits
    _shared_core: tuple | None = None  # (reference norm's gain and bias, U n(E), U 1) or () where not shared

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
    @reads_weights
    def ov_logits(self, layer: int, tokens: torch.Tensor, columns: torch.Tensor | None = None,
                  float32: bool = True) -> torch.Tensor:
        x = self.model.get_input_embeddings()(tokens.to(self.device))  # [N, D]
        final = get_path(self.model, self.family.final_norm)
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
        at = norm_at_input(get_path(self.model, self.family.final_norm), result.reshape(H * N, D))
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
    @reads_weights
    def ov_factors(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        D = self.d_model
        embed = self.model.get_input_embeddings()
        ids = torch.arange(self.model.config.vocab_size, device=self.device)
        block = self.layers[layer]
        norm = (lambda x: x) if self.family.input_norm is None else getattr(block, self.family.input_norm)
        E_n = torch.cat([norm(embed(ids[i : i + VOCAB_CHUNK]).unsqueeze(0))[0] for i in range(0, len(ids), VOCAB_CHUNK)]).float()
        U = self.model.get_output_embeddings().weight.T.float()  # [D, V]
        return E_n, self._value_weights(layer).float(), self.W_O(layer).float(), norm_gain(get_path(self.model, self.family.final_norm), D).unsqueeze(1) * U

    @torch.no_grad()
    @reads_weights
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
        gain = norm_gain(get_path(self.model, self.family.final_norm), D).float()  # [D]
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
                final_gain = norm_gain(get_path(self.model, self.family.final_norm), self.d_model).float()
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
    @reads_weights(ends=False)
    def circuit_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head W_Q, W_K, W_V [H, D, E] with the input norm's gain folded in, and W_O [H, E, D] (float64); rotary
        embeddings are left out (the direct QK circuit at relative distance 0). Families that normalise queries and keys
        (q_norm / k_norm) have no linear QK circuit and are refused."""
        attn, cfg = self._attn(layer), self.model.config
        if any(getattr(attn, name, None) is not None for name in ("q_norm", "k_norm", "q_layernorm", "k_layernorm")):
            raise IclabError(f"{cfg.model_type}: its queries and keys are normalised (q_norm / k_norm), so no linear QK circuit "
                             "can be read off its weights")
        H, kv, E, D = self.n_heads, self.n_kv_heads, self.d_head, self.d_model
        Wq, Wk = query_key_weights(attn, H, kv, E, D)  # [H*E, D], [kv*E, D] as Linear weights (out, in)
        norm = None if self.family.input_norm is None else getattr(self.layers[layer], self.family.input_norm)
        g = (torch.ones(D) if norm is None else norm_gain(norm, D)).to(self.device).double().view(1, D, 1)
        W_Q = g * Wq.double().view(H, E, D).transpose(1, 2)
        W_K = g * Wk.double().view(kv, E, D).transpose(1, 2).repeat_interleave(H // kv, dim=0)
        return W_Q, W_K, g * self._value_weights(layer).double(), self.W_O(layer).double()
