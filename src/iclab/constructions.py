"""Akyürek et al. (2023)'s constructions as weights of iclab's own :class:`Transformer`.

The paper proves that a transformer can run a learning algorithm on its prompt
by composing primitive operations, each of which one attention or MLP layer
realises exactly or to any precision: ``mov`` (copy a slot of the residual
stream from another position), ``mul`` (products of slots, through the
GeLU's quadratic regime), ``aff`` (an affine map of slots, through the GeLU's
linear regime) and the prefix mean of a slot (uniform causal attention). Here
each primitive is a function that writes the weights of one layer of a real
``Transformer`` in float64, and :func:`gd_step_model` composes them into a
model whose prediction at every query position is one step of gradient descent
from w0 = 0 (the paper's Theorem 1), checked against :class:`iclab.learners.GD`.

The residual stream is cut into named slots (:class:`Layout`); a layer writes
into slots that are zero before it (the residual connection adds).
Shapes: D = layout width; slots are index ranges into D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from iclab.models import ModelConfig, Transformer
from iclab.models.transformer import MLP
from iclab.models.attention import Attention

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
# Above this pre-activation the GeLU is the identity in float64 (Phi(u) rounds to 1).
_LINEAR_REGIME = 40.0


@dataclass(frozen=True)
class Layout:
    """Named slots of the residual stream: name -> width, laid out in order."""

    widths: tuple[tuple[str, int], ...]

    @property
    def width(self) -> int:
        return sum(w for _, w in self.widths)

    def __getitem__(self, name: str) -> list[int]:
        start = 0
        for slot, w in self.widths:
            if slot == name:
                return list(range(start, start + w))
            start += w
        raise KeyError(f"no slot {name!r}; slots: {[s for s, _ in self.widths]}")


def _zero(module: torch.nn.Module) -> None:
    for p in module.parameters():
        p.data.zero_()


@torch.no_grad()
def mov(attn: Attention, layout: Layout, src: str, dst: str, pos: str, pos_sq: str, one: str, beta: float = 1e3) -> None:
    """Each position t copies slot ``src`` of position t - 1 into ``dst`` (position 0 copies its own).

    Scores q_t . k_s = beta (2 (t - 1) s - s^2), i.e. -beta (s - (t - 1))^2 up to a per-query
    constant: position t - 1 wins by at least ``beta`` over every other, so in float64 the
    softmax puts weight exactly 1 on it for beta >= 750. Needs slots ``pos`` = t, ``pos_sq`` = t^2
    and ``one`` = 1. One head with d_head = D.
    """
    _zero(attn)
    c = beta * math.sqrt(attn.d_head)  # the attention divides scores by sqrt(d_head)
    (p,), (p2,), (o,) = layout[pos], layout[pos_sq], layout[one]
    attn.W_Q[0, p, 0] = 2 * c
    attn.W_Q[0, o, 0] = -2 * c
    attn.W_Q[0, o, 1] = -c
    attn.W_K[0, p, 0] = 1.0
    attn.W_K[0, p2, 1] = 1.0
    _route(attn, layout[src], layout[dst])


@torch.no_grad()
def prefix_mean(attn: Attention, layout: Layout, src: str, dst: str) -> None:
    """Each position t writes the mean of slot ``src`` over positions 0..t into ``dst``
    (zero queries and keys: uniform causal attention)."""
    _zero(attn)
    _route(attn, layout[src], layout[dst])


def _route(attn: Attention, src: list[int], dst: list[int]) -> None:
    """Values read ``src`` and the output writes them into ``dst`` (head 0, value coordinates 0..len-1)."""
    for i, (a, b) in enumerate(zip(src, dst, strict=True)):
        attn.W_V[0, a, i] = 1.0
        attn.W_O[0, i, b] = 1.0


@torch.no_grad()
def mul(mlp: MLP, layout: Layout, products: list[tuple], eps: float = 1e-6) -> None:
    """Products of linear forms of the residual, added into one coordinate each.

    ``products``: (a, b, dst, k) or (a, b, dst, k, scale) with a and b linear forms {slot
    coordinate "name" or "name:i": coefficient}; scale * a * b is added to coordinate k of slot
    ``dst`` (put a large factor in ``scale`` rather than in a form: the error below grows with
    the size of a and b). Uses
    a b = (S(e (a + b)) - S(e (a - b))) / (4 e^2 sqrt(2/pi)) with S(u) = GeLU(u) + GeLU(-u)
    = u erf(u / sqrt 2) = sqrt(2/pi) u^2 (1 - u^2 / 6 + ...): four hidden units per product,
    relative error about eps^2 (a^2 + b^2) / 6 plus float64 rounding of about 1e-16 / eps^2.
    """
    _zero(mlp)
    if 4 * len(products) > mlp.W_in.shape[1]:
        raise ValueError(f"{len(products)} products need {4 * len(products)} hidden units, the MLP has {mlp.W_in.shape[1]}")
    scale = 1.0 / (4 * eps**2 * _SQRT_2_OVER_PI)
    for i, (a, b, dst, k, *rest) in enumerate(products):
        out = layout[dst][k]
        w = scale * (rest[0] if rest else 1.0)
        for j, (sign_b, sign_u, weight) in enumerate(((1, 1, w), (1, -1, w), (-1, 1, -w), (-1, -1, -w))):
            unit = 4 * i + j
            for form, sign in ((a, 1.0), (b, float(sign_b))):
                for name, coef in form.items():
                    mlp.W_in[_coordinate(layout, name), unit] += sign_u * sign * eps * coef
            mlp.W_out[unit, out] = weight


@torch.no_grad()
def aff(mlp: MLP, layout: Layout, maps: list[tuple[dict[str, float], float, str, int]]) -> None:
    """Affine maps of the residual added into one coordinate each: (form, bias, dst, k) adds
    form . h + bias to coordinate k of ``dst``, through the GeLU's linear regime (pre-activation
    shifted by 40, where GeLU(u) = u in float64; exact for |form . h + bias| < 1, to rounding)."""
    _zero(mlp)
    for unit, (form, bias, dst, k) in enumerate(maps):
        for name, coef in form.items():
            mlp.W_in[_coordinate(layout, name), unit] += coef
        mlp.b_in[unit] = bias + _LINEAR_REGIME
        mlp.W_out[unit, layout[dst][k]] = 1.0
        mlp.b_out[layout[dst][k]] -= _LINEAR_REGIME


def _coordinate(layout: Layout, name: str) -> int:
    slot, _, index = name.partition(":")
    return layout[slot][int(index) if index else 0]


def gd_layout(d: int) -> Layout:
    """Slots of the one-step-GD construction: D = 5 d + 5."""
    return Layout((("y", 1), ("x", d), ("one", 1), ("pos", 1), ("pos_sq", 1), ("prev_x", d), ("yx", d),
                   ("x_scaled", d), ("mean_yx", d), ("pred", 1)))


def gd_step_model(d: int, n_points: int, lr: float, eps: float = 1e-6, beta: float = 1e3) -> Transformer:
    """A 2-block transformer (float64) whose prediction at each x_i is one GD step from w0 = 0,
    y_hat_i = x_i . 2 lr sum_{j<i} y_j x_j, on Akyürek-encoded prompts (x as (0, x), y as (y, 0)).

    block 0 attention: mov x of the previous position (the y token's own x);
    block 0 MLP:       mul y * prev_x (zero at x tokens, whose y is 0) and (t + 1) * x (zero at y tokens);
    block 1 attention: prefix mean of y x over positions 0..t (= sum_{j<i} y_j x_j / (t + 1) at t = 2i);
    block 1 MLP:       mul, summed: pred = (t + 1) x . mean = x_i . sum_{j<i} y_j x_j;
    read-out:          2 lr * pred.
    Width D = 5 d + 5, MLP 8 d, one head, no LayerNorm: O(1) layers and O(d) width, as in the
    paper's Theorem 1.
    """
    layout = gd_layout(d)
    D = layout.width
    cfg = ModelConfig(n_layers=2, d_model=D, n_heads=1, d_head=D, d_mlp=8 * d, normalization="none",
                      positional="learned", n_ctx=2 * n_points, input="continuous", d_input=d + 1, d_output=1)
    model = Transformer(cfg).double()
    with torch.no_grad():
        _zero(model)
        model.read_in.weight[layout["y"][0], 0] = 1.0
        for k in range(d):
            model.read_in.weight[layout["x"][k], 1 + k] = 1.0
        model.read_in.bias[layout["one"][0]] = 1.0
        t = torch.arange(cfg.n_ctx, dtype=torch.float64)
        model.W_pos[:, layout["pos"][0]] = t
        model.W_pos[:, layout["pos_sq"][0]] = t**2
        first, second = model.blocks
        mov(first.attn, layout, "x", "prev_x", "pos", "pos_sq", "one", beta)
        s = float(cfg.n_ctx)  # (t + 1) / s <= 1 keeps the GeLU products in their accurate range; the output scales back
        products = [({"y": 1.0}, {f"prev_x:{k}": 1.0}, "yx", k) for k in range(d)]
        products += [({"pos": 1 / s, "one": 1 / s}, {f"x:{k}": 1.0}, "x_scaled", k, s) for k in range(d)]
        mul(first.mlp, layout, products, eps)
        prefix_mean(second.attn, layout, "yx", "mean_yx")
        mul(second.mlp, layout, [({f"x_scaled:{k}": 1 / s}, {f"mean_yx:{k}": 1.0}, "pred", 0, s) for k in range(d)], eps)
        model.read_out.weight[0, layout["pred"][0]] = 2 * lr
    return model.eval()
