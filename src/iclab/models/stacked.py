"""Several seeds' transformers as one model: every parameter stacked on a leading seed axis.

A training step of the quick models is mostly per-operation overhead (d_model 32-128, a few thousand
numbers per matrix), so S seeds computed as one model with S times larger operations cost far less than S
models run one after another. :class:`StackedTransformer` holds the parameters of S :class:`Transformer` of
one :class:`ModelConfig`, each seed's at index s of a leading axis, under the lone model's parameter names,
and computes the lone forward pass for each seed at once: the same operations, their matrix products
batched over the seed axis (``baddbmm``), the attention's (seed, batch, head) triples in one product. Seed
s's outputs equal its lone model's up to float rounding (tests/test_train_together.py); the gradient of a
sum of per-seed losses is each seed's own gradient, so one optimiser step trains every seed as if alone.

Only the training path: no hook points and no head mask (the analyses read each seed's lone model).
Shapes: the axes of :mod:`iclab.models.config`, plus ``N`` the seeds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iclab.models.attention import attention_path, narrow_attention, plain_attention
from iclab.models.config import ModelConfig
from iclab.models.transformer import Transformer


class StackedTransformer(nn.Module):
    """The parameters of ``models`` (one config) stacked: ``param(name)`` is [N, *lone shape].

    ``forward(inputs)``: token ids [N, B, T] or vectors [N, B, T, I] -> logits [N, B, T, V] or
    predictions [N, B, T, O]. ``seed_state(s)``: seed s's tensors under the lone model's state-dict names.
    """

    def __init__(self, models: list[Transformer]):
        super().__init__()
        if not models:
            raise ValueError("StackedTransformer needs at least one model")
        self.cfg: ModelConfig = models[0].cfg
        if any(m.cfg != self.cfg for m in models):
            raise ValueError("the stacked models must share one ModelConfig")
        self.n_seeds = len(models)
        self.names = [name for name, _ in models[0].named_parameters()]
        lone = [dict(m.named_parameters()) for m in models]
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([p[name].detach() for p in lone]).clone()) for name in self.names)
        self._index = {name: i for i, name in enumerate(self.names)}
        self._lone_buffers = [dict(m.named_buffers()) for m in models]

    def param(self, name: str) -> torch.Tensor:
        return self.stacked[self._index[name]]

    def named_stacked(self) -> list[tuple[str, nn.Parameter]]:
        """(lone name, stacked parameter) in the lone model's parameter order."""
        return list(zip(self.names, self.stacked))

    def seed_state(self, s: int) -> dict[str, torch.Tensor]:
        """Seed s's state dict, as its lone :class:`Transformer` would save it (views, no copy)."""
        state = {name: p.detach()[s] for name, p in self.named_stacked()}
        state.update(self._lone_buffers[s])
        return state

    # --- the forward pass -------------------------------------------------------------------------------------

    def _linear(self, x: torch.Tensor, weight: str, bias: str | None, transpose: bool = False) -> torch.Tensor:
        """x [N, B, T, A] times the stacked weight [N, A, C] ([N, C, A] stored, for nn.Linear's) plus bias [N, C]."""
        N, B, T, A = x.shape
        W = self.param(weight)
        W = W.transpose(1, 2) if transpose else W
        flat = x.reshape(N, B * T, A)
        out = torch.bmm(flat, W) if bias is None else torch.baddbmm(self.param(bias).unsqueeze(1), flat, W)
        return out.view(N, B, T, -1)

    def _norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        if self.cfg.normalization != "layernorm":
            return x
        w, b = self.param(prefix + ".weight"), self.param(prefix + ".bias")  # [N, D]
        return torch.addcmul(b[:, None, None], F.layer_norm(x, x.shape[-1:]), w[:, None, None])

    def _heads(self, x: torch.Tensor, prefix: str, which: str) -> torch.Tensor:
        """x [N, B, T, D] -> the heads of ``which`` ("QKV", "QK" or "V") side by side: [N, B, T, len(which) * H, E]."""
        Ws = [self.param(f"{prefix}.W_{c}") for c in which]  # [N, H, D, E] each
        bs = [self.param(f"{prefix}.b_{c}") for c in which]  # [N, H, E] each
        N, H, D, E = Ws[0].shape
        W = torch.cat(Ws, dim=1).permute(0, 2, 1, 3).reshape(N, D, -1)
        b = torch.cat(bs, dim=1).reshape(N, 1, -1)
        B, T = x.shape[1:3]
        return torch.baddbmm(b, x.reshape(N, B * T, D), W).view(N, B, T, len(which) * H, E)

    def _attention(self, x: torch.Tensor, qk_pos: torch.Tensor | None, layer: int) -> torch.Tensor:
        prefix = f"blocks.{layer}.attn"
        N, B, T, D = x.shape
        H, E = self.cfg.n_heads, self.cfg.head_dim
        if qk_pos is None:
            q, k, v = self._heads(x, prefix, "QKV").split(H, dim=3)
        else:
            q, k = self._heads(x + qk_pos[:, None], prefix, "QK").split(H, dim=3)
            v = self._heads(x, prefix, "V")
        if self.cfg.smeared_keys:
            s = torch.sigmoid(self.param(f"{prefix}.smear_logit")).view(N, 1, 1, H, 1)
            k = torch.cat([k[:, :, :1], s * k[:, :, 1:] + (1 - s) * k[:, :, :-1]], dim=2)
        q, k, v = (t.reshape(N * B, T, H, E) for t in (q, k, v))
        path = attention_path(T, E, q.dtype)
        if path == "narrow":
            z = narrow_attention(q, k, v)
        elif path == "plain":
            z = plain_attention(q, k, v)
        else:
            z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True).transpose(1, 2)
        W_O = self.param(f"{prefix}.W_O").reshape(N, H * E, D)
        out = torch.baddbmm(self.param(f"{prefix}.b_O").unsqueeze(1), z.reshape(N, B * T, H * E), W_O)
        return out.view(N, B, T, D)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        N, T = inputs.shape[0], inputs.shape[2]
        if inputs.shape[0] != self.n_seeds:
            raise ValueError(f"inputs have {inputs.shape[0]} seeds on their first axis, the model {self.n_seeds}")
        if cfg.input == "tokens":
            W_E = self.param("W_E")  # [N, V, D]
            offset = (torch.arange(N, device=inputs.device) * cfg.d_vocab).view(N, 1, 1)
            resid = F.embedding(inputs + offset, W_E.reshape(N * cfg.d_vocab, -1))
        else:
            resid = self._linear(inputs, "read_in.weight", "read_in.bias", transpose=True)
        qk_pos = None
        if cfg.positional != "none":
            pos = self.param("W_pos")[:, :T]  # [N, T, D]
            if cfg.positional == "learned":
                resid = resid + pos[:, None]
            else:
                qk_pos = pos
        for layer in range(cfg.n_layers):
            resid = resid + self._attention(self._norm(resid, f"blocks.{layer}.ln1"), qk_pos, layer)
            if not cfg.attn_only:
                pre = self._linear(self._norm(resid, f"blocks.{layer}.ln2"), f"blocks.{layer}.mlp.W_in", f"blocks.{layer}.mlp.b_in")
                resid = resid + self._linear(F.gelu(pre), f"blocks.{layer}.mlp.W_out", f"blocks.{layer}.mlp.b_out")
        x = self._norm(resid, "ln_final")
        if cfg.input == "tokens":
            return self._linear(x, "W_U", "b_U")
        return self._linear(x, "read_out.weight", "read_out.bias", transpose=True)
