"""The decoder-only transformer: embed -> blocks (attention [+ MLP]) -> unembed.

Pre-LayerNorm blocks (or no normalisation), GeLU MLPs or attention-only,
token or continuous input. Shapes use the vocabulary of
:mod:`iclab.models.config`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from iclab.errors import IclabError
from iclab.models.attention import Attention
from iclab.models.config import ModelConfig
from iclab.models.hooks import HookPoint


def _norm(cfg: ModelConfig) -> nn.Module:
    return nn.LayerNorm(cfg.d_model) if cfg.normalization == "layernorm" else nn.Identity()


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.mlp_dim))
        self.b_in = nn.Parameter(torch.zeros(cfg.mlp_dim))
        self.W_out = nn.Parameter(torch.empty(cfg.mlp_dim, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre = HookPoint("[B, T, M] before GeLU")
        self.hook_post = HookPoint("[B, T, M] after GeLU")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(torch.addmm(self.b_in, x.flatten(0, -2), self.W_in).view(*x.shape[:-1], -1))
        post = self.hook_post(F.gelu(pre))
        return torch.addmm(self.b_out, post.flatten(0, -2), self.W_out).view(*x.shape)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = _norm(cfg)
        self.attn = Attention(cfg)
        self.mlp = None if cfg.attn_only else MLP(cfg)
        self.ln2 = None if cfg.attn_only else _norm(cfg)
        self.hook_resid_pre = HookPoint("[B, T, D]")
        self.hook_attn_out = HookPoint("[B, T, D]")
        self.hook_resid_mid = HookPoint("[B, T, D] (equals resid_post when attention-only)")
        self.hook_mlp_out = HookPoint("[B, T, D]")
        self.hook_resid_post = HookPoint("[B, T, D]")

    def forward(
        self, resid: torch.Tensor, qk_pos: torch.Tensor | None, head_mask: torch.Tensor | None
    ) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        resid = resid + self.hook_attn_out(self.attn(self.ln1(resid), qk_pos, head_mask))
        resid = self.hook_resid_mid(resid)
        if self.mlp is not None:
            resid = resid + self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid)


class Transformer(nn.Module):
    """Decoder-only transformer configured by :class:`ModelConfig`.

    ``forward(inputs, head_mask=None)``:
      inputs: token ids [B, T] (int64) or vectors [B, T, I] (continuous input);
      head_mask: [L, H] or [B, L, H], multiplies each head's output z;
      returns logits [B, T, V] or predictions [B, T, O].
    The generator, if given, makes initialisation reproducible; none is global.
    """

    def __init__(self, cfg: ModelConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        if cfg.input == "tokens":
            self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, D))
            self.W_U = nn.Parameter(torch.empty(D, cfg.d_vocab))
            self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))
        else:
            self.read_in = nn.Linear(cfg.d_input, D)
            self.read_out = nn.Linear(D, cfg.d_output)
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, D)) if cfg.positional != "none" else None
        self.hook_embed = HookPoint("[B, T, D]")
        self.hook_pos_embed = HookPoint("[T, D]")
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = _norm(cfg)
        self.init_weights(generator if generator is not None else torch.Generator().manual_seed(0))

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """Initialise every parameter by ``cfg.init`` (see :class:`ModelConfig`).

        ``gpt2``: N(0, init_std) weights, output projections / sqrt(2 L), zero
        biases; the continuous read-in / read-out keep the usual linear-layer
        scale, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (as in Garg et al.'s model), so
        the inputs are not drowned by the position embedding.
        ``torch``: that linear-layer scale for every weight and bias, with
        fan_in the width each one reads (D for W_Q/W_K/W_V/W_in, H E for W_O, M
        for W_out); positions and token embeddings N(0, init_std).
        LayerNorm gains are 1 and its biases 0 either way.
        """
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            fan_in = self._fan_in(name, leaf)
            if ("." + name).rsplit(".", 2)[-2].startswith("ln"):  # LayerNorm gain and bias
                p.fill_(1.0 if leaf == "weight" else 0.0)
            elif leaf == "smear_logit":
                p.zero_()
            elif fan_in is not None and (self.cfg.init == "torch" or name.startswith(("read_in.", "read_out."))):
                bound = 1.0 / math.sqrt(fan_in)
                p.uniform_(-bound, bound, generator=generator)
            elif leaf in ("W_O", "W_out"):
                p.normal_(0.0, std / math.sqrt(2 * self.cfg.n_layers), generator=generator)
            elif leaf.startswith("W_"):
                p.normal_(0.0, std, generator=generator)
            else:  # biases under gpt2
                p.zero_()

    def _fan_in(self, name: str, leaf: str) -> int | None:
        """The width a linear weight or bias reads; None for embeddings and positions."""
        cfg = self.cfg
        if name.startswith("read_in."):
            return cfg.d_input
        if name.startswith("read_out.") or leaf in ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V", "W_in", "b_in", "W_U", "b_U"):
            return cfg.d_model
        if leaf in ("W_O", "b_O"):
            return cfg.n_heads * cfg.head_dim
        if leaf in ("W_out", "b_out"):
            return cfg.mlp_dim
        return None

    def _check_inputs(self, inputs: torch.Tensor) -> None:
        cfg = self.cfg
        if cfg.input == "tokens":
            if inputs.dim() != 2 or inputs.dtype not in (torch.int64, torch.int32):
                raise IclabError(f"token inputs must be integer ids of shape [batch, positions], got {inputs.dtype} {tuple(inputs.shape)}")
            if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= cfg.d_vocab):
                raise IclabError(f"token ids must lie in [0, {cfg.d_vocab}), got [{int(inputs.min())}, {int(inputs.max())}]")
        elif inputs.dim() != 3 or inputs.shape[-1] != cfg.d_input:
            raise IclabError(f"continuous inputs must have shape [batch, positions, {cfg.d_input}], got {tuple(inputs.shape)}")
        if inputs.shape[1] > cfg.n_ctx:
            raise IclabError(f"sequence has {inputs.shape[1]} positions but the model's n_ctx is {cfg.n_ctx}")

    def _layer_mask(self, head_mask: torch.Tensor | None, layer: int) -> torch.Tensor | None:
        if head_mask is None:
            return None
        L, H = self.cfg.n_layers, self.cfg.n_heads
        if head_mask.shape[-2:] != (L, H) or head_mask.dim() not in (2, 3):
            raise IclabError(f"head_mask must have shape [{L}, {H}] or [batch, {L}, {H}], got {tuple(head_mask.shape)}")
        return head_mask[..., layer, :]

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """Token or vector inputs -> residual stream before the first block, [B, T, D]."""
        x = self.W_E[inputs] if self.cfg.input == "tokens" else self.read_in(inputs)
        return self.hook_embed(x)

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Final residual stream [B, T, D] -> logits [B, T, V] or predictions [B, T, O]."""
        x = self.ln_final(resid)
        if self.cfg.input == "tokens":
            return x @ self.W_U + self.b_U
        return self.read_out(x)

    def forward(self, inputs: torch.Tensor, head_mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(inputs)
        T = inputs.shape[1]
        resid = self.embed(inputs)
        qk_pos = None
        if self.W_pos is not None:
            pos = self.hook_pos_embed(self.W_pos[:T])
            if self.cfg.positional == "learned":
                resid = resid + pos
            else:
                qk_pos = pos
        for layer, block in enumerate(self.blocks):
            resid = block(resid, qk_pos, self._layer_mask(head_mask, layer))
        return self.unembed(resid)
