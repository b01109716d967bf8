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
from w0 = 0 (the paper's Theorem 1), checked against :class:`iclab.learners.GD`;
:func:`ridge_model` composes them, with a division through the LayerNorm
(``div``), into ridge regression by Sherman-Morrison updates (Theorem 2),
checked against :class:`iclab.learners.Ridge`. :func:`attend` points a head at
a fixed position, with a sink for the queries before it.

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


def _zero_head(attn: Attention, head: int) -> None:
    for W in (attn.W_Q, attn.W_K, attn.W_V, attn.W_O, attn.b_Q, attn.b_K, attn.b_V):
        W.data[head].zero_()
    attn.b_O.data.zero_()


@torch.no_grad()
def mov(attn: Attention, layout: Layout, src: str, dst: str, pos: str, pos_sq: str, one: str, beta: float = 1e3,
        head: int = 0) -> None:
    """Each position t copies slot ``src`` of position t - 1 into ``dst`` (position 0 copies its own).

    Scores q_t . k_s = beta (2 (t - 1) s - s^2), i.e. -beta (s - (t - 1))^2 up to a per-query
    constant: position t - 1 wins by at least ``beta`` over every other, so in float64 the
    softmax puts weight exactly 1 on it for beta >= 750. Needs slots ``pos`` = t, ``pos_sq`` = t^2
    and ``one`` = 1. Writes ``head`` (d_head = D) and leaves the other heads as they are.
    """
    _zero_head(attn, head)
    c = beta * math.sqrt(attn.d_head)  # the attention divides scores by sqrt(d_head)
    (p,), (p2,), (o,) = layout[pos], layout[pos_sq], layout[one]
    attn.W_Q[head, p, 0] = 2 * c
    attn.W_Q[head, o, 0] = -2 * c
    attn.W_Q[head, o, 1] = -c
    attn.W_K[head, p, 0] = 1.0
    attn.W_K[head, p2, 1] = 1.0
    route(attn, layout[src], layout[dst], head)


@torch.no_grad()
def prefix_mean(attn: Attention, layout: Layout, src: str, dst: str) -> None:
    """Each position t writes the mean of slot ``src`` over positions 0..t into ``dst``
    (zero queries and keys: uniform causal attention)."""
    _zero(attn)
    route(attn, layout[src], layout[dst])


@torch.no_grad()
def route(attn: Attention, src: list[int], dst: list[int], head: int = 0, coef: float = 1.0, start: int = 0) -> int:
    """Values of ``head`` read ``src`` and its output adds ``coef`` times them into ``dst`` (value coordinates from
    ``start``); returns the next free value coordinate."""
    for i, (a, b) in enumerate(zip(src, dst, strict=True)):
        attn.W_V[head, a, start + i] = coef
        attn.W_O[head, start + i, b] = 1.0
    return start + len(src)


@torch.no_grad()
def mul(mlp: MLP, layout: Layout, products: list[tuple], eps: float = 1e-6) -> None:
    """Products of linear forms of the residual, added into one coordinate each.

    ``products``: (a, b, dst, k) or (a, b, dst, k, scale) with a and b linear forms {slot
    coordinate "name" or "name:i": coefficient}; scale * a * b is added to coordinate k of slot
    ``dst`` (put a large factor in ``scale`` rather than in a form: the error below grows with
    the size of a and b). Uses
    a b = (S(e (a + b)) - S(e (a - b))) / (4 e^2 sqrt(2/pi)) with S(u) = GeLU(u) + GeLU(-u)
    = u erf(u / sqrt 2) = sqrt(2/pi) u^2 (1 - u^2 / 6 + ...): four hidden units per product,
    relative error about eps^2 (a^2 + b^2) / 6 plus float64 rounding of about 1e-16 / eps.
    """
    mlp_ops(mlp, layout, products=products, eps=eps)


@torch.no_grad()
def aff(mlp: MLP, layout: Layout, maps: list[tuple], shift: float = _LINEAR_REGIME) -> None:
    """Affine maps of the residual added into one coordinate each: (form, bias, dst, k) adds
    form . h + bias to coordinate k of ``dst`` ((form, bias, dst, k, coef) adds coef times it),
    through the GeLU's linear regime: the pre-activation is shifted by ``shift`` (default 40, where
    GeLU(u) = u in float64), exact to rounding (about shift * 1e-16) for form . h + bias > 1 - shift."""
    mlp_ops(mlp, layout, maps=maps, shift=shift)


@torch.no_grad()
def mlp_ops(mlp: MLP, layout: Layout, products: list[tuple] = (), maps: list[tuple] = (), eps: float = 1e-6,
            shift: float = _LINEAR_REGIME) -> None:
    """One MLP that computes the products of :func:`mul` and the affine maps of :func:`aff` side by side
    (4 hidden units per product, 1 per map; everything else zero)."""
    _zero(mlp)
    needed = 4 * len(products) + len(maps)
    if needed > mlp.W_in.shape[1]:
        raise ValueError(f"{len(products)} products and {len(maps)} maps need {needed} hidden units, the MLP has {mlp.W_in.shape[1]}")
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
    for unit, (form, bias, dst, k, *rest) in enumerate(maps, start=4 * len(products)):
        coef = rest[0] if rest else 1.0
        for name, c in form.items():
            mlp.W_in[_coordinate(layout, name), unit] += c
        mlp.b_in[unit] = bias + shift
        mlp.W_out[unit, layout[dst][k]] = coef
        mlp.b_out[layout[dst][k]] -= shift * coef


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


# ----------------------------------------------------------------------------- ridge by Sherman-Morrison (Theorem 2)


@torch.no_grad()
def attend(attn: Attention, layout: Layout, head: int, target: int | None, pos: str, pos_sq: str, one: str,
           first: str | None = None, beta: float = 2e3) -> None:
    """Point ``head`` at a fixed position ``target`` (or, with ``target`` None, at each query's own position).

    Scores beta (2 p s - s^2) = beta (p^2 - (s - p)^2) with p = target (or p = t): among the keys a query sees,
    the one closest to p wins by at least ``beta``. With slot ``first`` (1 at position 0, else 0), position 0 gets
    beta (p^2 - 1/2) on top: a query before ``target`` attends exactly to position 0 (the *sink*, whose value slots
    must be zero), a query at or after it to ``target`` (margin beta / 2). Values and outputs are left to
    :func:`route`.
    """
    _zero_head(attn, head)
    c = beta * math.sqrt(attn.d_head)
    (p,), (p2,), (o,) = layout[pos], layout[pos_sq], layout[one]
    if target is None:
        attn.W_Q[head, p, 0] = 2 * c
    else:
        attn.W_Q[head, o, 0] = 2 * c * target
    attn.W_Q[head, o, 1] = -c
    attn.W_K[head, p, 0] = 1.0
    attn.W_K[head, p2, 1] = 1.0
    if first is not None:
        if target is None:
            raise ValueError("a sink needs a fixed target position")
        attn.W_Q[head, o, 2] = c * (target**2 - 0.5)
        attn.W_K[head, layout[first][0], 2] = 1.0


def ridge_layout(d: int) -> Layout:
    """Slots of the Sherman-Morrison ridge construction: D = d^2 + 6 d + 13."""
    return Layout((("y", 1), ("x", d), ("one", 1), ("pos", 1), ("pos_sq", 1), ("first", 1), ("zero", 1), ("big", 2),
                   ("ex_x", d), ("cur_x", d), ("w", d), ("B", d * d), ("u", d), ("e", 1), ("q", 1), ("q_sq", 1),
                   ("eq", 1), ("uq", d), ("pred", 1)))


def ridge_model(d: int, n_points: int, lam: float, big: float = 1e12, eps: float = 3e-6) -> Transformer:
    """A pre-LayerNorm transformer (float64) whose prediction at each x_j is ridge regression on the pairs before it,
    x_j . (X^T X + lam I)^-1 X^T y, by Sherman-Morrison updates (Akyürek et al. 2023, Theorem 2), on Akyürek-encoded
    prompts. Depth 5 (n - 1) + 2 blocks (5 per update), width D = d^2 + 6 d + 13, two heads of width D,
    MLP 4 (d^2 + d) + 2: O(n) layers and O(d^2) width.

    State at every position t: B = (X^T X + lam I)^-1 (d^2 slots, B_0 = I / lam) and w = B X^T y over the pairs that
    end before t. Update with pair i (x, y), five blocks:
      1 attention: head 0 fetches (x_i, y_i) from position 2 i + 1 (the y token, which holds its x in ``ex_x``), or
                   zeros from the sink at position 0 when t < 2 i + 1, so a position never uses a later pair;
                   head 1 (each position itself) clears the scratch slots and sets q = 1.
        MLP:       u = B x, e = y - x . w                                               (mul)
      2 MLP:       q = 1 + x . u                                                         (mul)
      3 MLP:       q^2, e q, u q (mul); the ``big`` pair (C, -C) -> (C q, -C q)           (aff)
      4 MLP:       div: the LayerNorm now divides every slot by q, so products of normalised slots give
                   w += u (e q) / q = k e and B -= u (u q)^T / q = k u^T, k = B x / q; the pair goes back to
                   about (C, -C) by subtracting C (q^2 / q - 1)
      5 MLP:       Newton's correction of the pair: at C rho the normalised ``one`` slot reads 1 / rho, and adding
                   C (1 / rho - 1) leaves C (1 + O((rho - 1)^2)); without it the pair's small error from step 4
                   grows from update to update.
    While the pair dominates the LayerNorm's variance the LayerNorm is a fixed scaling (its gain C sqrt(2 / D)
    undoes it) up to |h|^2 / C^2; every weight that reads the residual sums to zero through the always-zero slot
    ``zero``, so the LayerNorm's mean drops out exactly. Block 0 writes ``ex_x`` (the previous position's x: zero
    at x tokens and at position 0), the last block pred = x . w. Its deviation from ridge is the mul primitive's
    error grown by the conditioning of X^T X + lam I (docs/linreg.md has the measured size).
    """
    if lam <= 0:
        raise ValueError(f"ridge needs lam > 0, got {lam}")
    layout = ridge_layout(d)
    D = layout.width
    n_blocks = 5 * (n_points - 1) + 2
    cfg = ModelConfig(n_layers=n_blocks, d_model=D, n_heads=2, d_head=D, d_mlp=max(4 * (d * d + d), 4 * (d + 2)) + 2,
                      normalization="layernorm", positional="learned", n_ctx=2 * n_points, input="continuous",
                      d_input=d + 1, d_output=1)
    model = Transformer(cfg).double()
    xs_ = [f"x:{j}" for j in range(d)]
    sB, sq = 1.0 / lam, 1.0 + d / lam  # typical sizes of B's entries and of q, kept out of the GeLU products
    with torch.no_grad():
        _zero(model)
        model.read_in.weight[layout["y"][0], 0] = 1.0
        for k in range(d):
            model.read_in.weight[layout["x"][k], 1 + k] = 1.0
        bias = model.read_in.bias
        bias[layout["one"][0]] = 1.0
        bias[layout["big"]] = torch.tensor([big, -big], dtype=torch.float64)
        for k in range(d):
            bias[layout["B"][k * d + k]] = 1.0 / lam
        t = torch.arange(cfg.n_ctx, dtype=torch.float64)
        model.W_pos[:, layout["pos"][0]] = t
        model.W_pos[:, layout["pos_sq"][0]] = t**2
        model.W_pos[0, layout["first"][0]] = 1.0
        gain = big * math.sqrt(2.0 / D)
        for ln in [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]:
            ln.weight.fill_(gain)
        blocks = list(model.blocks)
        # block 0: ex_x = x of the previous position, minus position 0's own x (head 1 sees only it at t = 0)
        mov(blocks[0].attn, layout, "x", "ex_x", "pos", "pos_sq", "one", head=0)
        attend(blocks[0].attn, layout, 1, 1, "pos", "pos_sq", "one")
        route(blocks[0].attn, layout["x"], layout["ex_x"], head=1, coef=-1.0)
        scratch = ["cur_x", "u", "e", "q", "q_sq", "eq", "uq"]
        pair_p, pair_n = (("big", 0), ("big", 1))
        correct = ({"one": big}, -big, *pair_p), ({"one": big}, -big, *pair_n, -1.0)
        for i in range(n_points - 1):
            b1, b2, b3, b4, b5 = blocks[1 + 5 * i: 6 + 5 * i]
            attend(b1.attn, layout, 0, 2 * i + 1, "pos", "pos_sq", "one", first="first")
            nxt = route(b1.attn, layout["ex_x"], layout["cur_x"], head=0)
            route(b1.attn, layout["y"], layout["e"], head=0, start=nxt)
            attend(b1.attn, layout, 1, None, "pos", "pos_sq", "one")
            start = 0
            for slot in scratch:
                start = route(b1.attn, layout[slot], layout[slot], head=1, coef=-1.0, start=start)
            route(b1.attn, layout["one"], layout["q"], head=1, start=start)
            mul(b1.mlp, layout,
                [({f"B:{k * d + j}": 1 / sB}, {f"cur_x:{j}": 1.0}, "u", k, sB) for k in range(d) for j in range(d)]
                + [({f"cur_x:{j}": 1.0}, {f"w:{j}": 1.0}, "e", 0, -1.0) for j in range(d)], eps)
            mul(b2.mlp, layout, [({f"cur_x:{j}": 1.0}, {f"u:{j}": 1 / sB}, "q", 0, sB) for j in range(d)], eps)
            raise_pair = ({"q": big, "one": -big}, 0.0, *pair_p), ({"q": big, "one": -big}, 0.0, *pair_n, -1.0)
            mlp_ops(b3.mlp, layout,
                    products=[({"q": 1 / sq}, {"q": 1 / sq}, "q_sq", 0, sq * sq), ({"e": 1.0}, {"q": 1 / sq}, "eq", 0, sq)]
                    + [({f"u:{k}": 1 / sB}, {"q": 1 / sq}, "uq", k, sB * sq) for k in range(d)],
                    maps=list(raise_pair), eps=eps, shift=1e-3 * big)
            restore = ({"q_sq": big, "q": -big}, 0.0, *pair_p, -1.0), ({"q_sq": big, "q": -big}, 0.0, *pair_n)
            mlp_ops(b4.mlp, layout,
                    products=[({f"u:{k}": 1 / sB}, {"eq": 1.0}, "w", k, sB) for k in range(d)]
                    + [({f"u:{k}": 1 / sB}, {f"uq:{j}": 1 / sB}, "B", k * d + j, -sB * sB) for k in range(d) for j in range(d)],
                    maps=list(restore), eps=eps, shift=1e-3 * big)
            aff(b5.mlp, layout, list(correct), shift=1e-3 * big)
        mul(blocks[-1].mlp, layout, [({x: 1.0}, {f"w:{j}": 1.0}, "pred", 0) for j, x in enumerate(xs_)], eps)
        model.read_out.weight[0, layout["pred"][0]] = 1.0
        _center_reads(model, layout["zero"][0])
    return model.eval()


def _center_reads(model: Transformer, zero: int) -> None:
    """Make every weight that reads the residual sum to zero over it, through the always-zero coordinate ``zero``:
    then W . (h - mean(h)) = W . h, so a LayerNorm's mean subtraction changes nothing that is read."""
    for block in model.blocks:
        for W in (block.attn.W_Q, block.attn.W_K, block.attn.W_V):
            W[:, zero, :] = -W.sum(dim=1)
        if block.mlp is not None:
            block.mlp.W_in[zero, :] = -block.mlp.W_in.sum(dim=0)
    model.read_out.weight[:, zero] = -model.read_out.weight.sum(dim=1)
