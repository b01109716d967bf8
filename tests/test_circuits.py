"""Circuits read off the weights, on a hand-built two-layer induction circuit with known answers."""

import math

import pytest
import torch

from iclab.analysis.circuits import composition_scores, eigenvalue_positivity, full_ov_circuit, induction_mechanism
from iclab.heads import IclabHeadModel
from iclab.models import ModelConfig, Transformer
from iclab.results import Head

V, E = 4, 4  # tokens; head width. Residual stream (24): [token (4) | previous token (4) | spare (16)]; 6 heads a layer


def induction_circuit() -> IclabHeadModel:
    """Head (0, 0) copies the current token into the 'previous token' subspace (its OV); head (1, 0) queries with the
    token and keys on that subspace (K-composition), and copies the attended token to the output. Other heads random."""
    cfg = ModelConfig(n_layers=2, d_model=24, n_heads=6, attn_only=True, normalization="none", d_vocab=V, n_ctx=16)
    model = Transformer(cfg, generator=torch.Generator().manual_seed(0))
    tok, prev = slice(0, 4), slice(4, 8)
    eye = torch.eye(4)
    with torch.no_grad():
        model.W_E.zero_()
        model.W_E[:, tok] = eye
        model.W_U.zero_()
        model.W_U[tok, :] = eye
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        for W in (a0.W_V, a0.W_O, a1.W_Q, a1.W_K, a1.W_V, a1.W_O):
            W[0].zero_()
        a0.W_V[0][tok, :] = eye  # reads the token
        a0.W_O[0][:, prev] = eye  # writes it where the next position's keys will look
        a1.W_Q[0][tok, :] = eye  # the query is the current token
        a1.W_K[0][prev, :] = eye  # the key is the previous token
        a1.W_V[0][tok, :] = eye  # copies the attended token
        a1.W_O[0][:, tok] = eye
    return IclabHeadModel(model)


def test_the_wired_pair_k_composes_and_the_others_sit_near_chance():
    comp = composition_scores(induction_circuit())
    wired = float(comp.k[0, 0, 1, 0])
    assert wired == pytest.approx(1 / math.sqrt(E), rel=1e-6)  # two aligned rank-4 isometries: sqrt(4) / (sqrt(4) * sqrt(4))
    assert float(comp.q[0, 0, 1, 0]) == pytest.approx(0.0, abs=1e-9)  # it writes nowhere the query reads
    assert float(comp.v[0, 0, 1, 0]) == pytest.approx(0.0, abs=1e-9)  # nor where the value reads
    others = [float(comp.k[0, a, 1, b]) for a in range(6) for b in range(1, 6)]  # random heads into random heads
    assert comp.chance == pytest.approx(1 / math.sqrt(24), rel=0.1)  # independent rank-E maps: about 1 / sqrt(d_model)
    assert max(others) < 0.7 * wired and sum(others) / len(others) == pytest.approx(comp.chance, rel=0.25)
    assert torch.isnan(comp.k[1, 0, 0, 0]) and torch.isnan(comp.k[0, 0, 0, 1]), "only earlier -> later layers compose"


def test_the_induction_head_copies_and_prefix_matches_by_its_eigenvalues():
    model = induction_circuit()
    assert torch.allclose(full_ov_circuit(model, 1, 0), torch.eye(V, dtype=torch.float64))
    previous_token = torch.zeros(model.n_layers, model.n_heads)
    previous_token[0, 0] = 0.9  # the planted previous-token head
    mech = induction_mechanism(model, previous_token, [Head(0, 3), Head(1, 0)])  # a layer-0 head is left out
    [ev] = mech.heads
    assert ev.head == Head(1, 0) and ev.previous_token_head == Head(0, 0) and ev.k_best_earlier_head == Head(0, 0)
    assert ev.ov_copying == pytest.approx(1.0) and ev.qk_prefix_matching == pytest.approx(1.0)
    assert ev.k_from_previous_token_head > 2 * ev.k_mean_other_earlier
    assert float(eigenvalue_positivity(-torch.eye(3))) == pytest.approx(-1.0)
