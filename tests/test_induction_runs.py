"""Head ablations through the one HeadModel path equal the same edits written with iclab's own hooks."""

import torch

from iclab.analysis.induction.evidence import token_losses
from iclab.analysis.induction.runs import ablations
from iclab.heads import IclabHeadModel
from iclab.models import ModelConfig, Transformer, ablate_heads, frozen_patterns, mean_z, record_patterns
from iclab.results import Head
from iclab.tasks.induction import icl_positions, icl_score


def test_ablations_through_the_head_model_equal_the_hooked_transformer():
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, attn_only=True, d_vocab=20, n_ctx=24)
    model = Transformer(cfg, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(20, (6, 24), generator=torch.Generator().manual_seed(1))
    result = ablations(IclabHeadModel(model), tokens, [Head(1, 2)])

    def icl() -> float:
        return icl_score(token_losses(IclabHeadModel(model), tokens, batch=6), *icl_positions(24))

    z_mean, patterns = mean_z(model, tokens), record_patterns(model, tokens)
    with ablate_heads(model, [(1, 2)], "mean", z_mean):
        assert abs(result.per_head["mean"][1][2] - icl()) < 1e-6
    with frozen_patterns(model, patterns), ablate_heads(model, [(0, 1)], "zero"):
        assert abs(result.per_head["pattern_preserving"][0][1] - icl()) < 1e-6
    with frozen_patterns(model, patterns), ablate_heads(model, [(1, 2)], "zero"):
        assert abs(result.induction_heads_ablated - icl()) < 1e-6
    assert result.per_head["zero"][0][1] != result.per_head["pattern_preserving"][0][1]  # freezing changes layer 1's view
    assert abs(result.clean - icl()) < 1e-6


def test_the_same_ablations_run_on_a_hugging_face_model(hf_folder):
    from iclab.heads import load_hf

    model = load_hf(hf_folder)
    tokens = torch.randint(3, model.model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(2))
    result = ablations(model, tokens, [Head(2, 1)])
    assert len(result.per_head["pattern_preserving"]) == 3 and len(result.per_head["zero"][0]) == 4
    assert all(abs(v) < 50 for row in result.per_head["mean"] for v in row) and result.induction_heads_ablated is not None
