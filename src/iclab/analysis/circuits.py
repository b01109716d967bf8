"""Circuits read off the weights of a :class:`~iclab.heads.HeadModel` (Elhage et al. 2021; Olsson et al. 2022,
argument 4): every head's W_Q, W_K, W_V, W_O from ``HeadModel.circuit_weights`` (iclab's models and the Hugging Face
families with linear queries and keys give them; a family that cannot says so in one line).

For head h of layer l, in the residual-stream (row-vector) convention:
  OV circuit  W_OV = W_V W_O                 [D, D]   (what the head writes, given what it reads)
  QK circuit  W_QK = W_Q W_K^T               [D, D]   (score between a query and a key residual vector)
Token-to-token forms use the embedding W_E [V, D] and unembedding W_U [D, V]:
  full OV  W_E W_OV W_U  [V, V];  full QK  W_E W_QK W_E^T  [V, V].
Composition of an earlier head A (layer l1) into a later head B (layer l2 > l1), the Frobenius-norm ratio
||X Y||_F / (||X||_F ||Y||_F):
  Q-composition: X = W_OV^A, Y = W_QK^B;  K-composition: X = W_OV^A, Y = (W_QK^B)^T;  V-composition: X = W_OV^A, Y = W_OV^B.
Norms enter through their gains (folded into W_Q, W_K, W_V and W_U; :func:`iclab.models.norms.norm_gain`); biases are
left out: the usual reading of circuits from weights. Shapes: L layers, H heads, D d_model, E d_head, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from iclab.analysis.heads import ov_eigenvalue_copying
from iclab.heads.base import HeadModel
from iclab.results import Head, Result


@torch.no_grad()
def head_matrices(model: HeadModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_OV, W_QK), each [L, H, D, D] float64, the input norm's gain folded in."""
    ov, qk = [], []
    for layer in range(model.n_layers):
        W_Q, W_K, W_V, W_O = model.circuit_weights(layer)
        ov.append(W_V @ W_O)
        qk.append(W_Q @ W_K.transpose(1, 2))
    return torch.stack(ov), torch.stack(qk)


def composition_ratio(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """||X Y||_F / (||X||_F ||Y||_F) over leading axes: X [..., D, D], Y [..., D, D] -> [...]."""
    return torch.linalg.matrix_norm(X @ Y) / (torch.linalg.matrix_norm(X) * torch.linalg.matrix_norm(Y)).clamp(min=1e-300)


@dataclass
class Composition:
    """Scores [L, H, L, H]: entry [l1, a, l2, b] is how much head (l1, a) composes into head (l2, b); NaN unless l1 < l2."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    chance: float  # the same ratio between independent Gaussian matrices of these shapes (mean over draws)


@torch.no_grad()
def composition_scores(model: HeadModel, generator: torch.Generator | None = None, draws: int = 64) -> Composition:
    """Q-, K- and V-composition between every head and every head of a later layer, and the chance level."""
    ov, qk = head_matrices(model)
    L, H, D, _ = ov.shape
    A = ov.view(L, H, 1, 1, D, D)
    scores = {name: composition_ratio(A, Y.view(1, 1, L, H, D, D)) for name, Y in
              (("q", qk), ("k", qk.transpose(-1, -2)), ("v", ov))}
    later = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1).view(L, 1, L, 1).expand(L, H, L, H)
    for s in scores.values():
        s[~later] = float("nan")
    E = model.d_head
    g = generator or torch.Generator().manual_seed(0)

    def low_rank() -> torch.Tensor:  # a random rank-E map D -> D, as a head's circuit is
        return torch.randn(draws, D, E, generator=g, dtype=torch.float64) @ torch.randn(draws, E, D, generator=g, dtype=torch.float64)

    chance = float(composition_ratio(low_rank(), low_rank()).mean())
    return Composition(scores["q"], scores["k"], scores["v"], chance)


def eigenvalue_positivity(M: torch.Tensor) -> torch.Tensor:
    """sum(lambda) / sum(|lambda|) of square matrices M [..., n, n]: 1 if every eigenvalue is positive."""
    eig = torch.linalg.eigvals(M.double())
    return eig.real.sum(-1) / eig.abs().sum(-1).clamp(min=1e-300)


@torch.no_grad()
def full_ov_circuit(model: HeadModel, layer: int, head: int) -> torch.Tensor:
    """[V, V]: E_n W_V W_O U, the logits head (layer, head) adds for each token it attends to, from the model's one OV
    path (``HeadModel.ov_factors``: embeddings through the layer's input norm, the final norm's gain folded into U)."""
    E_n, W_V, W_O, U = (t.double() for t in model.ov_factors(layer))
    return E_n @ W_V[head] @ W_O[head] @ U


@torch.no_grad()
def full_qk_circuit(model: HeadModel, layer: int, head: int) -> torch.Tensor:
    """[V, V]: W_E W_QK W_E^T: the attention score from a query token to a key token (direct path)."""
    _, qk = head_matrices(model)
    W_E = model.embedding()
    return W_E @ qk[layer, head] @ W_E.T


@torch.no_grad()
def k_composed_qk_circuit(model: HeadModel, previous: Head, induction: Head) -> torch.Tensor:
    """[V, V]: W_E W_QK^ind (W_E W_OV^prev)^T: the induction head's score from a query token to a key position whose
    previous-token head wrote the token before it. Positive eigenvalues: it attends where that token matches (prefix matching)."""
    ov, qk = head_matrices(model)
    W_E = model.embedding()
    return W_E @ qk[induction] @ (W_E @ ov[previous]).T


@dataclass(frozen=True)
class HeadMechanism:
    """Olsson et al.'s mechanistic check of one induction head: the earlier-layer head with the best previous-token
    score, the K-composition from it and the mean from the other earlier heads, the earlier head it K-composes with
    most, and the eigenvalue positivity of its full OV circuit (copying) and of its QK circuit K-composed with the
    previous-token head (prefix matching)."""

    head: Head
    previous_token_head: Head
    k_from_previous_token_head: float
    k_best_earlier_head: Head
    k_mean_other_earlier: float
    ov_copying: float
    qk_prefix_matching: float


@dataclass(frozen=True)
class Mechanism(Result):
    """:class:`HeadMechanism` of each induction head after layer 0, the chance level of a composition score, and the
    K-composition matrix [L][H][L][H] (0 where undefined) for a figure."""

    SCHEMA: ClassVar[int] = 1

    chance: float
    k_composition: list[list[list[list[float]]]]
    heads: list[HeadMechanism]


def induction_mechanism(model: HeadModel, previous_token: torch.Tensor, induction: list[Head],
                        generator: torch.Generator | None = None) -> Mechanism:
    """For each induction head (layer >= 1): the earlier-layer head with the best previous-token score
    ``previous_token`` [L, H], the K-composition of every earlier head into it (is that previous-token head the one
    it composes with most?), and the eigenvalue positivity of its OV circuit and of its QK circuit composed with the
    previous-token head."""
    comp = composition_scores(model, generator)
    copying = ov_eigenvalue_copying(model)  # [L, H]: the one OV eigenvalue measure, as in the head scores
    heads = []
    for head in induction:
        layer = head.layer
        if layer == 0:
            continue
        prev_scores = previous_token[:layer]
        prev = Head(*divmod(int(prev_scores.argmax()), prev_scores.shape[1]))
        k_in = comp.k[:layer, :, layer, head.head]  # [layer, H]: every earlier head into this one
        best = Head(*divmod(int(k_in.argmax()), k_in.shape[1]))
        k_prev = comp.k[prev.layer, prev.head, layer, head.head]
        heads.append(HeadMechanism(
            head, prev, float(k_prev), best, float((k_in.sum() - k_prev) / max(k_in.numel() - 1, 1)),
            float(copying[head]),
            float(eigenvalue_positivity(k_composed_qk_circuit(model, prev, head)))))
    return Mechanism(comp.chance, comp.k.nan_to_num(0.0).tolist(), heads)
