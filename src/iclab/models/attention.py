"""Causal multi-head attention with per-head weights and four paths to the same function.

Weights are stored per head so that a head is an index:
W_Q, W_K, W_V: [H, D, E], W_O: [H, E, D]. Four paths compute the same
function. Without hooks or a head mask, :func:`attention_path` picks one by
the head width E and the sequence length: heads narrower than
``NARROW_HEAD_DIM`` take the *narrow* path up to ``NARROW_MAX_POSITIONS``
(the plain path's products computed transposed, so that the head dimension
is always the rows of a product's output: on CPU the matrix-product library
is several times slower when the output has 8 columns than when it has 8
rows); wider heads take the *plain* path (two batched matrix products around
a softmax) up to ``PLAIN_MAX_POSITIONS`` and the *fused* path,
``torch.nn.functional.scaled_dot_product_attention``, beyond: on CPU the
fused kernel's per-call cost outweighs its saving for short sequences
(docs/scaling.md, "Training speed", has the measurements). The *explicit*
path materialises scores and pattern as hook points and runs whenever a hook
in this module is active or a head mask is given, so every cached pattern
and every intervention sees the real computation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from iclab.models.config import ModelConfig
from iclab.models.hooks import HookPoint

# The longest sequence that takes the plain path. Attention alone (forward and backward, 4 heads of 8 to 16
# dimensions, 2 CPU cores, torch 2.13) was 10-50% faster plain than fused at 18 to 64 positions and 1.5-3x slower at
# 128 and 256; a whole training step of the quick models was 1.13-1.17x faster plain at 18 positions (linreg), level
# at 12 (add-k) and 0.95x at 64 (induction): hence 32.
PLAIN_MAX_POSITIONS = 32
# Heads narrower than this take the narrow path, up to NARROW_MAX_POSITIONS. Attention alone, forward and backward,
# 4 heads of 8 dimensions, one thread: narrow 1.1-1.5x faster than plain and 1.3-2.1x faster than fused from 18 to 128
# positions, 0.8-1.2x of fused at 256 (between runs) and 0.6x at 512; at 16 and 32 dimensions no faster than plain
# (docs/scaling.md; benchmarks/attention.py).
NARROW_HEAD_DIM = 16
NARROW_MAX_POSITIONS = 128
# In bfloat16 (a training step under autocast) the fused kernel is 4-12x slower than the plain path on these CPUs at
# every shape measured, 12 to 512 positions, 16 and 32 dimensions (forward and backward, one thread; docs/scaling.md,
# "bfloat16 training"): bfloat16 takes the plain path up to this many positions, the longest measured.
PLAIN_MAX_POSITIONS_BF16 = 512


def attention_path(T: int, E: int, dtype: torch.dtype = torch.float32) -> str:
    """The path ("narrow", "plain" or "fused") for T positions of heads of E dimensions whose queries are of ``dtype``,
    without hooks or head mask."""
    if E < NARROW_HEAD_DIM and T <= NARROW_MAX_POSITIONS:
        return "narrow"
    longest = PLAIN_MAX_POSITIONS_BF16 if dtype == torch.bfloat16 else PLAIN_MAX_POSITIONS
    return "plain" if T <= longest else "fused"


_CAUSAL: dict[tuple, torch.Tensor] = {}


def causal_bias(T: int, S: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[T, S] additive mask: 0 where query t (the last T of S positions) may attend to key s, -inf after it."""
    key = (T, S, device, dtype)
    if key not in _CAUSAL:
        _CAUSAL[key] = torch.full((T, S), float("-inf"), device=device, dtype=dtype).triu(S - T + 1)
    return _CAUSAL[key]


def _heads_first(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q [B, T, H, E], k and v [B, S, H, E] -> [B * H, T or S, E] each, one (batch, head) pair per matrix."""
    B, _, H, E = q.shape
    return tuple(t.transpose(1, 2).reshape(B * H, -1, E) for t in (q, k, v))


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax(q k^T / sqrt(E)) v for q [B, T, H, E], k and v [B, S, H, E] -> z [B, T, H, E], as batched
    matrix products over the B * H (batch, head) pairs."""
    B, T, H, E = q.shape
    qh, kh, vh = _heads_first(q, k, v)
    scores = torch.baddbmm(causal_bias(T, k.shape[1], q.device, q.dtype), qh, kh.transpose(1, 2), alpha=1 / math.sqrt(E))
    return torch.bmm(scores.softmax(dim=-1), vh).view(B, H, T, E).transpose(1, 2)


class _NarrowAttention(torch.autograd.Function):
    """The plain path's function and its gradient for [N, T or S, E] heads, every product whose output has E columns
    computed as its transpose (E rows): z^T = v^T p^T forward; dv^T = dz^T p, dq^T = k^T ds^T, dk^T = q^T ds
    backward. Same numbers, another memory layout of the outputs (returned as transposed views)."""

    @staticmethod
    def forward(ctx, qh, kh, vh, bias, scale):
        pattern = torch.baddbmm(bias, qh, kh.transpose(1, 2), alpha=scale).softmax(dim=-1)  # [N, T, S]
        ctx.save_for_backward(qh, kh, vh, pattern)
        ctx.scale = scale
        return torch.bmm(vh.transpose(1, 2), pattern.transpose(1, 2)).transpose(1, 2)  # [N, T, E]

    @staticmethod
    def backward(ctx, dz):
        qh, kh, vh, pattern = ctx.saved_tensors
        d_pattern = torch.bmm(dz, vh.transpose(1, 2))  # [N, T, S]
        d_scores = torch._softmax_backward_data(d_pattern, pattern, -1, pattern.dtype).mul_(ctx.scale)
        dq = torch.bmm(kh.transpose(1, 2), d_scores.transpose(1, 2)).transpose(1, 2)
        dk = torch.bmm(qh.transpose(1, 2), d_scores).transpose(1, 2)
        dv = torch.bmm(dz.transpose(1, 2), pattern).transpose(1, 2)
        return dq, dk, dv, None, None


def narrow_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """:func:`plain_attention` for narrow heads (E < ``NARROW_HEAD_DIM``): the same function, its products transposed."""
    B, T, H, E = q.shape
    qh, kh, vh = _heads_first(q, k, v)
    z = _NarrowAttention.apply(qh, kh, vh, causal_bias(T, k.shape[1], q.device, q.dtype), 1 / math.sqrt(E))
    return z.reshape(B, H, T, E).transpose(1, 2)


def _project(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x [B, T, D] times per-head W [H, D, E] plus b [H, E] -> [B, T, H, E] (one matmul)."""
    H, D, E = W.shape
    flat = torch.addmm(b.reshape(H * E), x.reshape(-1, D), W.permute(1, 0, 2).reshape(D, H * E))
    return flat.view(*x.shape[:-1], H, E)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H, D, E = cfg.n_heads, cfg.d_model, cfg.head_dim
        self.n_heads, self.d_head = H, E
        self.W_Q = nn.Parameter(torch.empty(H, D, E))
        self.W_K = nn.Parameter(torch.empty(H, D, E))
        self.W_V = nn.Parameter(torch.empty(H, D, E))
        self.W_O = nn.Parameter(torch.empty(H, E, D))
        self.b_Q = nn.Parameter(torch.zeros(H, E))
        self.b_K = nn.Parameter(torch.zeros(H, E))
        self.b_V = nn.Parameter(torch.zeros(H, E))
        self.b_O = nn.Parameter(torch.zeros(D))
        # One logit a per head; the key mix is sigmoid(a). Olsson et al. 2022, "smeared keys".
        self.smear_logit = nn.Parameter(torch.zeros(H)) if cfg.smeared_keys else None
        self.hook_q = HookPoint("[B, T, H, E]")
        self.hook_k = HookPoint("[B, S, H, E] (after smearing, if any)")
        self.hook_v = HookPoint("[B, S, H, E]")
        self.hook_attn_scores = HookPoint("[B, H, T, S] pre-softmax, causal entries -inf")
        self.hook_pattern = HookPoint("[B, H, T, S] softmax over S")
        self.hook_z = HookPoint("[B, T, H, E] per-head output before W_O")
        self.hook_result = HookPoint("[B, T, H, D] per-head output after W_O")

    def _explicit_needed(self, head_mask: torch.Tensor | None) -> bool:
        return head_mask is not None or any(
            h.active for h in (self.hook_attn_scores, self.hook_pattern, self.hook_z, self.hook_result)
        )

    def smear(self, k: torch.Tensor) -> torch.Tensor:
        """k_j <- s k_j + (1 - s) k_(j-1) for j >= 1, s = sigmoid(a) per head; k [B, S, H, E]."""
        s = torch.sigmoid(self.smear_logit).view(-1, 1)  # [H, 1]
        rest = s * k[:, 1:] + (1 - s) * k[:, :-1]
        return torch.cat([k[:, :1], rest], dim=1)

    def forward(
        self,
        x: torch.Tensor,
        qk_pos: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, T, D]; qk_pos [T, D] added to the query/key inputs only (Shortformer);
        head_mask [H] or [B, H] multiplies each head's z. Returns [B, T, D]."""
        B, T, _ = x.shape
        H = self.n_heads
        if qk_pos is None:
            W = torch.cat([self.W_Q, self.W_K, self.W_V])
            b = torch.cat([self.b_Q, self.b_K, self.b_V])
            q, k, v = _project(x, W, b).split(H, dim=2)
        else:
            q, k = _project(x + qk_pos, torch.cat([self.W_Q, self.W_K]), torch.cat([self.b_Q, self.b_K])).split(
                H, dim=2
            )
            v = _project(x, self.W_V, self.b_V)
        if self.smear_logit is not None:
            k = self.smear(k)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)

        path = "explicit" if self._explicit_needed(head_mask) else attention_path(T, self.d_head, q.dtype)
        if path == "explicit":
            z = self._explicit(q, k, v)
        elif path == "narrow":
            z = narrow_attention(q, k, v)
        elif path == "plain":
            z = plain_attention(q, k, v)
        else:
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            ).transpose(1, 2)  # [B, T, H, E]
        z = self.hook_z(z)
        if head_mask is not None:
            z = z * head_mask.view(-1, 1, H, 1).to(z.dtype)
        if self.hook_result.active:
            result = self.hook_result(torch.einsum("bthe,hed->bthd", z, self.W_O))
            return result.sum(dim=2) + self.b_O
        out = torch.addmm(self.b_O, z.reshape(B * T, H * self.d_head), self.W_O.reshape(H * self.d_head, -1))
        return out.view(B, T, -1)

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(E) + causal mask) v with the pattern materialised -> z [B, T, H, E]."""
        T, S = q.shape[1], k.shape[1]
        scores = torch.einsum("bthe,bshe->bhts", q, k) / math.sqrt(self.d_head)
        future = torch.ones(T, S, dtype=torch.bool, device=q.device).triu(S - T + 1)
        scores = self.hook_attn_scores(scores.masked_fill(future, float("-inf")))
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        return torch.einsum("bhts,bshe->bthe", pattern, v)
