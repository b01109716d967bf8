"""Random-head controls for ablations: same layers and count when possible, and an honest note when not."""

import pytest
import torch

from iclab.analysis.induction.evidence import control_note, random_heads_like
from iclab.results import Head


def draws(heads, n=50, n_heads=4, n_layers=3):
    g = torch.Generator().manual_seed(0)
    return [random_heads_like(heads, n_heads, g, n_layers) for _ in range(n)]


def test_controls_come_from_the_same_layers_when_they_have_free_heads():
    heads = [Head(1, 0), Head(1, 1), Head(2, 3)]
    for c in draws(heads):
        assert sorted(h.layer for h in c) == [1, 1, 2] and not set(c) & set(heads) and len(set(c)) == 3
    assert control_note(heads, draws(heads)) == ""


def test_a_layer_filled_by_induction_heads_lends_its_draws_to_the_nearest_layers_and_says_so():
    """A 4-head layer whose four heads are all induction heads (Gemma 3 270M's case) used to crash the control."""
    heads = [Head(1, h) for h in range(4)]
    controls = draws(heads)
    for c in controls:
        assert len(c) == 4 and {h.layer for h in c} <= {0, 2} and not set(c) & set(heads)
    assert {h.layer for c in controls for h in c} == {0, 2}  # both neighbours are drawn from
    assert "200 of the controls' 200 heads come from the nearest layers by depth" in control_note(heads, controls)
    edge = [Head(0, h) for h in range(4)]
    assert all({h.layer for h in c} == {1} for c in draws(edge))  # the nearest layer of layer 0 is layer 1


def test_with_no_free_head_left_a_draw_is_skipped_and_counted():
    heads = [Head(layer, h) for layer in range(2) for h in range(2)]  # every head of a 2 x 2 model
    c = random_heads_like(heads, 2, torch.Generator().manual_seed(0), 2)
    assert c == [] and "4 draws skipped (no free head left in the model)" in control_note(heads, [c])


def test_token_losses_and_mean_z_shrink_their_batch_to_the_logit_budget_with_the_same_results(monkeypatch):
    """A 262k vocabulary would hold 8 x 256 x 262,144 logits at once; the batch shrinks, the numbers do not change."""
    import iclab.analysis.induction.evidence as E
    from iclab.heads import IclabHeadModel
    from iclab.models import ModelConfig, Transformer

    model = IclabHeadModel(Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=50, n_ctx=12),
                                       generator=torch.Generator().manual_seed(0)))
    ids = torch.randint(0, 50, (6, 12), generator=torch.Generator().manual_seed(1))
    whole, z_whole = E.token_losses(model, ids, batch=8), E.mean_head_z(model, ids, batch=8)
    calls = []
    real = model.logits
    monkeypatch.setattr(model, "logits", lambda x, iv=None, positions=None: calls.append(len(x)) or real(x, iv, positions))
    monkeypatch.setattr(E, "LOGIT_BUDGET", 2 * 12 * 50)  # two sequences' logits
    assert torch.allclose(E.token_losses(model, ids, batch=8), whole, atol=1e-6)
    assert torch.allclose(E.mean_head_z(model, ids, batch=8), z_whole, atol=1e-6)
    assert max(calls) == 2


def test_ablation_effects_from_the_clean_prefix_equal_whole_ablated_passes():
    """Every ablated pass starts at the first layer an ablation changes (layer 2 here); its losses are those of the
    whole pass, so the effects equal ones computed by hand from whole passes."""
    import iclab.analysis.induction.evidence as E
    from iclab.heads import IclabHeadModel
    from iclab.models import ModelConfig, Transformer

    model = IclabHeadModel(Transformer(ModelConfig(n_layers=3, d_model=16, n_heads=2, d_vocab=50, n_ctx=24),
                                       generator=torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(1)
    text = torch.randint(0, 50, (5, 20), generator=g)
    probe = E.InductionProbe.make(model, 4, 6, g)
    sets = {"a": [Head(2, 0)], "b": [Head(2, 1)]}
    z_mean = E.mean_head_z(model, text, batch=2)
    effects = E.ablation_effects(model, sets, ("zero", "mean"), z_mean, text, probe, batch=2)
    for mode in ("zero", "mean"):
        for name, heads in sets.items():
            iv = E.ablation(model, heads, mode, z_mean)
            by_hand = E.AblationEffect(probe.copy_losses(E.token_losses(model, probe.ids, iv, 2))[1],
                                       E.text_icl(E.token_losses(model, text, iv, 2))[0])
            got = effects[mode][name]
            assert abs(got.second_copy_loss - by_hand.second_copy_loss) < 1e-5 and abs(got.icl_score - by_hand.icl_score) < 1e-5
    assert effects["zero"]["a"] != effects["zero"]["clean"]
    with_prefix = E.clean_token_losses(model, text, 2, 2)[1]
    with pytest.raises(ValueError, match="changes layer 1"):
        E.token_losses(model, text, E.ablation(model, [Head(1, 0)], "zero"), 2, with_prefix)
