"""Head scores on hand-built attention patterns whose right answers are known."""

import pytest
import torch

from iclab.models import ModelConfig, Transformer
from iclab.tasks.induction import icl_score
from iclab.analysis.heads import (
    copying_rank,
    copying_score,
    copying_top1,
    detection_score,
    duplicate_token_detection,
    induction_detection,
    prefix_matching_score,
    previous_token_detection,
    previous_token_score,
    repeated_random_tokens,
)


def seq(batch=3, length=6, repeats=3, seed=0):
    vocab = torch.arange(10, 60)
    return repeated_random_tokens(batch, length, repeats, vocab, torch.Generator().manual_seed(seed), bos=0)


def as_pattern(rows: torch.Tensor) -> torch.Tensor:
    """Normalise 0/1 target rows into a causal attention pattern (rows with no target attend to BOS)."""
    p = rows.clone()
    empty = p.sum(-1) == 0
    p[..., 0] = torch.where(empty, torch.ones_like(p[..., 0]), p[..., 0])
    return p / p.sum(-1, keepdim=True)


def test_detection_patterns_on_a_tiny_sequence():
    tokens = torch.tensor([[0, 5, 6, 5, 6]])
    assert previous_token_detection(tokens)[0, 3, 2] == 1 and previous_token_detection(tokens)[0].sum() == 4
    dup = duplicate_token_detection(tokens)[0]
    assert dup[3, 1] == 1 and dup[4, 2] == 1 and dup.sum() == 2
    ind = induction_detection(tokens)[0]
    assert ind[3, 2] == 1 and ind[4, 3] == 1 and ind.sum() == 2


def test_a_perfect_induction_head_scores_one_and_a_previous_token_head_does_not():
    tokens = seq()
    induction = as_pattern(induction_detection(tokens)).unsqueeze(1)  # [B, 1, T, T]
    previous = as_pattern(previous_token_detection(tokens)).unsqueeze(1)
    assert prefix_matching_score(induction, tokens).item() == pytest.approx(1.0)
    assert prefix_matching_score(previous, tokens).item() < 0.1
    assert previous_token_score(previous).item() == pytest.approx((tokens.shape[1] - 1) / tokens.shape[1], abs=0.2)
    assert detection_score(previous, previous_token_detection(tokens), exclude_bos=True).item() == pytest.approx(1.0)
    assert detection_score(induction, induction_detection(tokens), exclude_bos=True).item() == pytest.approx(1.0)
    assert detection_score(induction, previous_token_detection(tokens), exclude_bos=True).item() < 0.1


def test_uniform_attention_gets_the_chance_level_prefix_matching_score():
    tokens = seq(batch=2, length=8, repeats=2)
    T = tokens.shape[1]
    uniform = torch.ones(T, T).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(2, 1, T, T)
    target = induction_detection(tokens)
    has = target.sum(-1) > 0
    chance = ((target / torch.arange(1, T + 1).view(1, T, 1)).sum(-1)[has]).mean()
    assert prefix_matching_score(uniform, tokens).item() == pytest.approx(chance.item())


def test_scores_broadcast_over_layers_and_heads():
    tokens = seq()
    ind = as_pattern(induction_detection(tokens))
    prev = as_pattern(previous_token_detection(tokens))
    layers = torch.stack([torch.stack([prev, ind], dim=1), torch.stack([ind, prev], dim=1)])  # [L=2, B, H=2, T, T]
    scores = prefix_matching_score(layers, tokens)
    assert scores.shape == (2, 2)
    assert scores[0, 1] == pytest.approx(1.0) and scores[1, 0] == pytest.approx(1.0)
    assert scores[0, 0] < 0.1 and scores[1, 1] < 0.1


def test_repeated_tokens_repeat_and_icl_score_sign():
    tokens = seq(batch=2, length=5, repeats=3)
    assert tokens.shape == (2, 16) and torch.equal(tokens[:, 1:6], tokens[:, 6:11])
    loss = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.5]])
    assert icl_score(loss, late=2, early=0) == pytest.approx(-1.75)


def test_copying_score_is_one_for_a_copier_minus_one_for_an_anti_copier():
    V, N = 20, 12
    tokens = torch.randint(V, (N,), generator=torch.Generator().manual_seed(0))
    copy = 3.0 * torch.nn.functional.one_hot(tokens, V).float()  # [N, V]
    noise = torch.randn(N, V, generator=torch.Generator().manual_seed(1))
    ov = torch.stack([copy, -copy, noise, copy + 0.1 * noise])  # [H=4, N, V]
    score = copying_score(ov, tokens)
    assert score[0] == pytest.approx(1.0, abs=1e-6)
    assert score[1] == pytest.approx(-1.0, abs=1e-6)
    assert score[2] < 0.0  # a random head raises its own token by chance only
    assert 0.5 < score[3] < 1.0
    assert copying_score(ov.expand(2, 4, N, V), tokens).shape == (2, 4)


def copy_and_suppress_model() -> Transformer:
    """One layer, two heads: head 0 reads and writes the first 8 directions unchanged, head 1 lowers what it reads."""
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, attn_only=True, normalization="none", d_vocab=16, n_ctx=8)
    model = Transformer(cfg)
    with torch.no_grad():
        model.W_E.copy_(torch.eye(16))
        model.W_U.copy_(torch.eye(16))
        attn = model.blocks[0].attn
        eye = torch.eye(16)[:, :8]
        attn.W_V[0].copy_(eye)
        attn.W_O[0].copy_(eye.T)
        attn.W_V[1].copy_(eye)
        attn.W_O[1].copy_(-eye.T)
    return model


def test_a_model_whose_ov_circuit_is_the_identity_copies():
    model = copy_and_suppress_model()
    tokens = torch.arange(8)
    from iclab.heads import IclabHeadModel

    ov = IclabHeadModel(model).direct_ov_logits(tokens)
    assert ov.shape == (1, 2, 8, 16)
    score = copying_score(ov, tokens)
    assert score[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert score[0, 1] == pytest.approx(-1.0, abs=1e-5)


def test_copying_scores_layer_by_layer_in_chunks_equal_the_full_tensor():
    from iclab.analysis.induction.scores import copying_scores, restricted_ov
    from iclab.heads import IclabHeadModel

    cfg = ModelConfig(n_layers=2, d_model=16, n_heads=2, attn_only=True, d_vocab=40, n_ctx=8)
    model = IclabHeadModel(Transformer(cfg, generator=torch.Generator().manual_seed(3)))
    vocab = torch.arange(3, 40)
    tokens = vocab[torch.randperm(len(vocab), generator=torch.Generator().manual_seed(0))[:23]]
    full, index = restricted_ov(model.direct_ov_logits(tokens), tokens, vocab)
    copying, top1, rank = copying_scores(model, tokens, vocab, chunk=5)  # 23 tokens: chunks of 5, 5, 5, 5, 3
    assert torch.allclose(copying, copying_score(full, index), atol=1e-5)
    assert torch.allclose(top1, copying_top1(full, index), atol=1e-6)
    assert torch.allclose(rank, copying_rank(full, index), atol=1e-6)


def test_copying_statistics_at_once_equal_the_three_scores_and_overwrite_their_input():
    from iclab.analysis.heads import copying_statistics

    logits = torch.randn(3, 2, 7, 50, generator=torch.Generator().manual_seed(0))  # [L, H, N, V]
    tokens = torch.tensor([0, 4, 9, 9, 20, 33, 49])
    logits[1, 0, torch.arange(7), tokens] += 10.0  # a copying head among random ones
    score, top1, rank = copying_statistics(logits.clone(), tokens)
    assert torch.allclose(score, copying_score(logits, tokens), atol=1e-6)
    assert torch.equal(top1, copying_top1(logits, tokens)) and torch.allclose(rank, copying_rank(logits, tokens))
    assert top1[1, 0] == 1.0 and top1[0, 0] < 0.5
    mine = logits.clone()
    copying_statistics(mine, tokens)
    assert not torch.equal(mine, logits)


def test_copying_top1_breaks_ties_as_argmax_does():
    """A tie for the largest logit goes to the first token (argmax's rule): the own token loses it to an equal logit
    before it and keeps it against one after it; a row without a tie is decided by the values alone."""
    from iclab.analysis.heads import copying_statistics

    logits = torch.zeros(1, 3, 10)
    tokens = torch.tensor([5, 5, 5])
    logits[0, 0, 5] = logits[0, 0, 2] = 3.0  # tie, another token first: not top-1
    logits[0, 1, 5] = logits[0, 1, 8] = 3.0  # tie, the own token first: top-1
    logits[0, 2, 5] = 3.0  # alone at the top
    top1 = copying_statistics(logits.clone(), tokens)[1]
    assert torch.equal(top1, copying_top1(logits, tokens)) and top1.item() == pytest.approx(2 / 3)


def test_eigenvalue_copying_is_one_for_a_copying_head_and_minus_one_for_a_suppressing_one():
    from iclab.analysis.heads import ov_eigenvalue_copying
    from iclab.heads import IclabHeadModel

    score = ov_eigenvalue_copying(IclabHeadModel(copy_and_suppress_model()))
    assert score[0, 0] == pytest.approx(1.0, abs=1e-6) and score[0, 1] == pytest.approx(-1.0, abs=1e-6)


def test_eigenvalue_copying_equals_the_eigenvalues_of_the_full_vocabulary_circuit():
    """The [E, E] shortcut gives the same score as the [V, V] OV circuit built explicitly (random weights: near 0)."""
    from iclab.analysis.heads import ov_eigenvalue_copying
    from iclab.heads import IclabHeadModel

    cfg = ModelConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=24, n_ctx=8)
    model = IclabHeadModel(Transformer(cfg, generator=torch.Generator().manual_seed(1)))
    score = ov_eigenvalue_copying(model)
    for layer in range(2):
        E_n, W_V, W_O, U = model.ov_factors(layer)
        for h in range(2):
            eig = torch.linalg.eigvals((E_n @ W_V[h] @ W_O[h] @ U).double())
            assert score[layer, h] == pytest.approx(float(eig.real.sum() / eig.abs().sum()), abs=1e-5)
    assert score.abs().max() < 0.9


def test_copying_rank_finds_a_planted_copying_head_at_a_real_vocabulary_size():
    """At SmolLM2's 49,152 tokens the specified copying score is -1 for every head (its denominator sums the change of
    every logit); the rank still tells a copying head (near 1) from a random one (near 0.5)."""
    from iclab.analysis.induction.scores import copying_scores
    from iclab.heads import IclabHeadModel

    V, D = 49_152, 64
    cfg = ModelConfig(n_layers=1, d_model=D, n_heads=2, attn_only=True, normalization="none", d_vocab=V, n_ctx=8)
    model = Transformer(cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.W_E.copy_(torch.randn(V, D, generator=torch.Generator().manual_seed(1)))
        model.W_U.copy_(model.W_E.T)
        attn = model.blocks[0].attn
        attn.W_V[0].copy_(torch.eye(D)[:, :32])  # head 0 reads the first 32 directions of the token ...
        attn.W_O[0].copy_(torch.eye(D)[:32])  # ... and writes them back: its OV circuit raises the attended token
    tokens = torch.randperm(V, generator=torch.Generator().manual_seed(2))[:40]
    copying, top1, rank = copying_scores(IclabHeadModel(model), tokens, torch.arange(V), chunk=16)
    assert rank[0, 0] > 0.99 and 0.35 < rank[0, 1] < 0.65
    assert copying[0, 0] < -0.99  # the specified score cannot tell them apart at this vocabulary size
