"""A two-layer add-k model with hand-set weights whose mechanism is known in advance: the known answer for Hu et al.'s
pipeline (:mod:`iclab.analysis.addk.pipeline`), and, with the mechanism changed, its negative controls.

How it computes x_q + k from "<bos> x1 -> y1 # ... # xq ->" (one token per number, :class:`NumberTokenizer`):
- layer 0: head L0H0 copies the previous token's number and "->" flag, L0H1 the number two tokens back (attention
  by position, score -beta (s - (t - delta))^2); the MLP then writes code(y_i - x_i) = code(k) at each label token
  (the only tokens that follow "->" and hold a number), exactly, by piecewise-linear interpolation over k = 1..k_max;
- layer 1: the *task heads* attend from every token to the label tokens alike (to BOS when there are none, as in a
  zero-shot prompt) and each writes its share of the mean code into the task slots; the MLP decodes k from the task
  slots (a bias-free map, so that the code scaled by a mask or recovery coefficient a gives a k: the method's
  search sees a smooth landscape), and the unembedding scores each number n by -(n - (x_q + k))^2.
The other heads are distractors: L0H2 averages every number before it (its output moves with k but nothing reads
it), L0H3 attends to itself, L1H2 copies the previous number, L1H3 attends to BOS.

``code``: ``"periodic"`` writes Hu et al.'s six features of k (magnitude at periods 50 and 25, the unit digit at 2, 5
and 10: :data:`iclab.analysis.addk.subspaces.PERIODIC`, with the phases ``PHASES``); ``"random"`` a random vector per k
(the periodic structure destroyed, the heads still carry k); either centred over k = 1..k_max, so that a head held
at its mean over the tasks (the recovery scan's baseline) adds nothing. ``task_heads``: which heads of layer 1 share
the task.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from iclab.analysis.addk.subspaces import PERIODIC
from iclab.heads import IclabHeadModel
from iclab.models import ModelConfig, Transformer
from iclab.tasks.addk import AddKConfig

PHASES = {"mod50": 1.0, "mod5": 0.5, "mod25": 2.0}  # the planted phases of the searched features (radians)
SLOTS = ("one", "pos", "pos_sq", "num", "is_arrow", "is_bos", "prev_num", "prev_arrow", "num2", "junk0", "junk1", "kval")
CODE = 6  # the code's width: Hu et al.'s six periodic features


def periodic_code(k: np.ndarray) -> np.ndarray:
    """Hu et al.'s six features of the tasks k [K] at the planted phases -> [K, 6], in PERIODIC's order."""
    return np.stack([f.wave(k, PHASES.get(name, 0.0)) for name, f in PERIODIC.items()], axis=1)


def _interpolation(points: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The piecewise-linear f through (points[i], values[i]) (points ascending; constant left of the first point and
    right of the last) as f(x) = values[0] + sum_j deltas_j relu(x - knots_j): knots [J], deltas [J, W]."""
    slopes = np.diff(values, axis=0) / np.diff(points)[:, None]  # [J - 1, W]
    deltas = np.concatenate([slopes[:1], np.diff(slopes, axis=0), -slopes[-1:]], axis=0)  # flat after the last point
    return points, deltas


def planted_addk_model(task: AddKConfig, code: str = "periodic", task_heads: tuple[int, ...] = (0, 1), n_heads: int = 4,
                       seed: int = 0, device: torch.device | str = "cpu") -> IclabHeadModel:
    """The hand-set model for ``task`` (an ``add`` task with one token per number); see the module docstring."""
    if task.op != "add" or task.digits:
        raise ValueError("the planted model does add-k with one token per number")
    if not task_heads or max(task_heads) >= n_heads or n_heads < 4:
        raise ValueError(f"task_heads must name heads of layer 1 (n_heads = {n_heads} >= 4)")
    tok = task.tokenizer()
    K = task.k_max
    ks = np.arange(1, K + 1)
    rng = np.random.default_rng(seed)
    table = periodic_code(ks) if code == "periodic" else rng.normal(size=(K, CODE)) if code == "random" else None
    if table is None:
        raise ValueError(f"code must be 'periodic' or 'random', got {code!r}")
    table = table - table.mean(0)  # centred over the tasks: a head held at its mean over tasks adds nothing
    slot = {name: i for i, name in enumerate(SLOTS)}
    phi = list(range(len(SLOTS), len(SLOTS) + CODE))  # the code at each label token
    task_slots = list(range(phi[-1] + 1, phi[-1] + 1 + CODE))  # the task heads' sum at every token
    D = task_slots[-1] + 1
    n_ctx = task.seq_len() + 2
    cfg = ModelConfig(n_layers=2, d_model=D, n_heads=n_heads, d_head=CODE, d_mlp=2 * K + 8, normalization="none",
                      n_ctx=n_ctx, d_vocab=tok.vocab_size, init="torch")
    net = Transformer(cfg, torch.Generator().manual_seed(seed))
    scale = math.sqrt(CODE)  # attention divides scores by sqrt(d_head)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        # embeddings: the constant, the number's value, the token's kind; positions t and t^2
        net.W_E[:, slot["one"]] = 1.0
        numbers = torch.arange(tok.lo, tok.hi + 1, dtype=torch.float32)
        net.W_E[tok.number(numbers.long()), slot["num"]] = numbers
        net.W_E[tok.arrow_id, slot["is_arrow"]] = 1.0
        net.W_E[tok.bos_id, slot["is_bos"]] = 1.0
        t = torch.arange(n_ctx, dtype=torch.float32)
        net.W_pos[:, slot["pos"]] = t
        net.W_pos[:, slot["pos_sq"]] = t**2

        def by_position(attn, head: int, delta: int, beta: float = 30.0) -> None:
            """Head ``head`` attends from t to t - delta: q.k = beta (2 (t - delta) s - s^2)."""
            attn.W_Q[head, slot["pos"], 0], attn.W_Q[head, slot["one"], 0] = 1.0, -float(delta)
            attn.W_Q[head, slot["one"], 1] = 1.0
            attn.W_K[head, slot["pos"], 0] = 2 * beta * scale
            attn.W_K[head, slot["pos_sq"], 1] = -beta * scale

        a0, a1 = net.blocks[0].attn, net.blocks[1].attn
        by_position(a0, 0, 1)
        a0.W_V[0, slot["num"], 0], a0.W_O[0, 0, slot["prev_num"]] = 1.0, 1.0
        a0.W_V[0, slot["is_arrow"], 1], a0.W_O[0, 1, slot["prev_arrow"]] = 1.0, 1.0
        by_position(a0, 1, 2)
        a0.W_V[1, slot["num"], 0], a0.W_O[1, 0, slot["num2"]] = 1.0, 1.0
        a0.W_V[2, slot["num"], 0], a0.W_O[2, 0, slot["junk0"]] = 1.0, 0.01  # uniform: the mean number so far
        by_position(a0, 3, 0)
        a0.W_V[3, slot["is_arrow"], 0], a0.W_O[3, 0, slot["junk1"]] = 1.0, 1.0
        # MLP 0: code(num - num2) at label tokens (prev_arrow = 1), nothing elsewhere (the gate -G (1 - prev_arrow))
        m0, sharp, gate = net.blocks[0].mlp, 40.0, 1e4
        knots, deltas = _interpolation(np.arange(0, K + 1, dtype=np.float64), np.concatenate([np.zeros((1, CODE)), table]))
        for j, (knot, delta) in enumerate(zip(knots, deltas)):
            m0.W_in[slot["num"], j], m0.W_in[slot["num2"], j] = sharp, -sharp
            m0.W_in[slot["prev_arrow"], j] = gate
            m0.b_in[j] = -sharp * knot - gate
            m0.W_out[j, phi] = torch.tensor(delta / sharp, dtype=torch.float32)
        # layer 1: the task heads attend to label tokens (score 200), else to BOS (100); each writes its share of the code
        for h in task_heads:
            a1.W_Q[h, slot["one"], 0] = 1.0
            a1.W_K[h, slot["prev_arrow"], 0], a1.W_K[h, slot["is_bos"], 0] = 200.0 * scale, 100.0 * scale
            for i in range(CODE):
                a1.W_V[h, phi[i], i] = 1.0
                a1.W_O[h, i, task_slots[i]] = 1.0 / len(task_heads)
        spare = [h for h in range(n_heads) if h not in task_heads]
        by_position(a1, spare[0], 1)
        a1.W_V[spare[0], slot["num"], 0], a1.W_O[spare[0], 0, slot["junk0"]] = 1.0, 0.01
        a1.W_Q[spare[1], slot["one"], 0], a1.W_K[spare[1], slot["is_bos"], 0] = 1.0, 100.0 * scale
        a1.W_V[spare[1], slot["one"], 0], a1.W_O[spare[1], 0, slot["junk1"]] = 1.0, 1.0
        # MLP 1: k from the task slots by a positively homogeneous map (no biases): f(a code(k)) = a k for a >= 0, so
        # a function vector scaled by a mask coefficient or a recovery coefficient c moves the answer smoothly
        m1, sharp1 = net.blocks[1].mlp, 200.0
        hidden = cfg.mlp_dim
        A_in = rng.normal(size=(CODE, hidden))
        pre = sharp1 * table @ A_in  # [K, hidden]
        post = torch.nn.functional.gelu(torch.tensor(pre)).numpy() / sharp1
        w = np.linalg.lstsq(post, ks.astype(np.float64), rcond=None)[0]
        m1.W_in[task_slots, :] = torch.tensor(sharp1 * A_in, dtype=torch.float32)
        m1.W_out[:, slot["kval"]] = torch.tensor(w / sharp1, dtype=torch.float32)
        # unembedding: number n scores beta (2 n (x_q + k) - n^2); the special tokens never win
        beta = 4.0
        net.W_U[slot["prev_num"], tok.number(numbers.long())] = 2 * beta * numbers
        net.W_U[slot["kval"], tok.number(numbers.long())] = 2 * beta * numbers
        net.W_U[slot["one"], tok.number(numbers.long())] = -beta * numbers**2
        net.W_U[slot["one"], [tok.bos_id, tok.arrow_id, tok.sep_id]] = -1e6
    return IclabHeadModel(net.to(device).eval(), tok)
