"""The transformer: paths agree, hooks cache and intervene, ablations are exact."""

import pytest
import torch

from iclab.errors import IclabError
from iclab.models import (
    ModelConfig,
    Transformer,
    ablate_heads,
    head_mask_without,
    hook_points,
    hooks,
    mean_z,
    run_with_cache,
)

TINY = dict(n_layers=2, d_model=32, n_heads=4, n_ctx=16, d_vocab=50)


def tiny(**overrides) -> Transformer:
    model = Transformer(ModelConfig(**{**TINY, **overrides}), generator=torch.Generator().manual_seed(0))
    return model.eval()


def tokens(batch=3, length=12, vocab=50, seed=1):
    return torch.randint(vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def force_explicit(model):
    """A no-op pattern hook on every layer: the explicit path runs, nothing changes."""
    return hooks(model, [(f"blocks.{i}.attn.hook_pattern", lambda x, h: None) for i in range(model.cfg.n_layers)])


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"positional": "shortformer", "attn_only": True},
        {"positional": "none", "smeared_keys": True, "normalization": "none"},
        {"d_head": 5},
    ],
)
@pytest.mark.parametrize("path", ["narrow", "plain", "fused"])
def test_narrow_plain_fused_and_explicit_attention_agree(options, path, monkeypatch):
    import iclab.models.attention as attention

    monkeypatch.setattr(attention, "attention_path", lambda T, E, dtype=None: path)
    model = tiny(**options)
    x = tokens()
    fast = model(x)
    with force_explicit(model):
        explicit = model(x)
    torch.testing.assert_close(fast, explicit, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d_head", [8, 16])
def test_narrow_plain_and_fused_attention_give_the_same_gradients(d_head, monkeypatch):
    """Training takes the narrow or plain path for short sequences: their backward is the fused path's."""
    import iclab.models.attention as attention

    grads = {}
    for path in ("narrow", "plain", "fused"):
        monkeypatch.setattr(attention, "attention_path", lambda T, E, dtype=None: path)
        model = tiny(smeared_keys=True, d_head=d_head)
        model(tokens()).logsumexp(-1).mean().backward()
        grads[path] = [p.grad for p in model.parameters()]
    for path in ("narrow", "plain"):
        for a, b in zip(grads[path], grads["fused"]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_attention_path_follows_head_width_and_length():
    from iclab.models.attention import attention_path

    assert attention_path(64, 8) == "narrow" and attention_path(18, 8) == "narrow"
    assert attention_path(256, 8) == "fused"
    assert attention_path(18, 16) == "plain" and attention_path(64, 16) == "fused"
    # in bfloat16 (a step under autocast) the fused kernel is the slow one: plain up to 512 positions, narrow unchanged
    assert attention_path(64, 16, torch.bfloat16) == "plain" and attention_path(512, 32, torch.bfloat16) == "plain"
    assert attention_path(1024, 16, torch.bfloat16) == "fused" and attention_path(64, 8, torch.bfloat16) == "narrow"


def test_a_bfloat16_step_takes_the_plain_path_and_computes_the_float32_function(monkeypatch):
    # under autocast the queries are bfloat16: 64 positions of 16-dimension heads take the plain path (fused in float32)
    import iclab.models.attention as attention

    taken = []
    chooser = attention.attention_path
    monkeypatch.setattr(attention, "attention_path", lambda T, E, dtype=torch.float32: taken.append(chooser(T, E, dtype)) or taken[-1])
    model = tiny(n_ctx=64, d_head=16)
    x = tokens(length=64)
    exact = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)
    assert taken == ["fused"] * model.cfg.n_layers + ["plain"] * model.cfg.n_layers
    torch.testing.assert_close(low.float(), exact, rtol=0.05, atol=0.05)


def test_continuous_input_paths_agree():
    model = tiny(input="continuous", d_input=5, d_output=2)
    x = torch.randn(2, 10, 5, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (2, 10, 2)
    with force_explicit(model):
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)


def test_hook_points_are_named_from_the_module_tree():
    names = set(hook_points(tiny()))
    for expected in [
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_resid_mid",
        "blocks.1.hook_resid_post",
        "blocks.0.attn.hook_q",
        "blocks.0.attn.hook_k",
        "blocks.0.attn.hook_v",
        "blocks.0.attn.hook_pattern",
        "blocks.0.attn.hook_z",
        "blocks.0.attn.hook_result",
        "blocks.0.mlp.hook_post",
    ]:
        assert expected in names


def test_run_with_cache_returns_only_requested_points_with_documented_shapes():
    model = tiny()
    x = tokens(batch=2, length=7)
    wanted = ["blocks.1.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.attn.hook_result", "blocks.0.mlp.hook_post"]
    out, cache = run_with_cache(model, x, names=wanted)
    assert set(cache) == set(wanted)
    pattern = cache["blocks.1.attn.hook_pattern"]
    assert pattern.shape == (2, 4, 7, 7)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 4, 7))
    assert torch.all(pattern.triu(1) == 0), "attention to future positions must be zero"
    assert cache["blocks.0.attn.hook_z"].shape == (2, 7, 4, 8)
    assert cache["blocks.0.attn.hook_result"].shape == (2, 7, 4, 32)
    assert cache["blocks.0.mlp.hook_post"].shape == (2, 7, 128)
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)


def test_per_head_results_sum_to_the_attention_output():
    model = tiny()
    names = ["blocks.0.attn.hook_result", "blocks.0.hook_attn_out"]
    _, cache = run_with_cache(model, tokens(), names=names)
    summed = cache["blocks.0.attn.hook_result"].sum(dim=2) + model.blocks[0].attn.b_O
    torch.testing.assert_close(summed, cache["blocks.0.hook_attn_out"], rtol=1e-5, atol=1e-6)


def test_hooks_are_removed_even_when_the_forward_raises():
    model = tiny()

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        with hooks(model, [("blocks.0.attn.hook_z", boom)]):
            model(tokens())
    assert not any(p.active for p in hook_points(model).values())
    model(tokens())  # runs clean


def test_unknown_hook_name_is_a_clear_error():
    with pytest.raises(IclabError, match="no hook point named"):
        run_with_cache(tiny(), tokens(), names=["blocks.0.attn.hook_patern"])


def test_zero_ablation_equals_deleting_the_heads_output_weights():
    model = tiny()
    x = tokens()
    heads = [(0, 1), (1, 3)]
    with ablate_heads(model, heads, mode="zero"):
        ablated = model(x)
    masked = model(x, head_mask=head_mask_without(model, heads))
    with torch.no_grad():
        for layer, head in heads:
            model.blocks[layer].attn.W_O[head] = 0.0
    deleted = model(x)
    torch.testing.assert_close(ablated, deleted, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masked, deleted, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(deleted, tiny()(x)), "ablating two heads must change the output"


def test_mean_ablation_sets_z_to_the_reference_mean():
    model = tiny()
    ref = tokens(batch=8, seed=5)
    means = mean_z(model, ref)
    assert means.shape == (2, 12, 4, 8)
    with ablate_heads(model, [(1, 2)], mode="mean", z_mean=means):
        _, cache = run_with_cache(model, tokens(), names=["blocks.1.attn.hook_z"])
    z = cache["blocks.1.attn.hook_z"]
    torch.testing.assert_close(z[:, :, 2], means[1, :, 2].expand(3, -1, -1))


def test_head_mask_of_ones_changes_nothing_and_bad_shapes_are_refused():
    model = tiny()
    x = tokens()
    torch.testing.assert_close(model(x, head_mask=torch.ones(2, 4)), model(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(IclabError, match="head_mask must have shape"):
        model(x, head_mask=torch.ones(4, 2))
    with pytest.raises(IclabError, match=r"head \(2, 0\) does not exist"):
        head_mask_without(model, [(2, 0)])


def test_bad_inputs_get_clear_errors():
    model = tiny()
    with pytest.raises(IclabError, match="token ids must lie in"):
        model(torch.tensor([[0, 50]]))
    with pytest.raises(IclabError, match="n_ctx is 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(IclabError, match="integer ids"):
        model(torch.zeros(1, 4))


def test_smeared_keys_mix_with_the_previous_key():
    model = tiny(smeared_keys=True, n_layers=1)
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.smear_logit.copy_(torch.tensor([0.0, 2.0, -1.0, 10.0]))
    _, cache = run_with_cache(model, tokens(), names=["blocks.0.attn.hook_k"])
    k = cache["blocks.0.attn.hook_k"]
    resid = model.embed(tokens()) + model.W_pos[:12]
    raw = torch.einsum("btd,hde->bthe", model.blocks[0].ln1(resid), attn.W_K) + attn.b_K
    s = torch.sigmoid(attn.smear_logit).view(1, 1, 4, 1)
    expected = torch.cat([raw[:, :1], s * raw[:, 1:] + (1 - s) * raw[:, :-1]], dim=1)
    torch.testing.assert_close(k, expected, rtol=1e-5, atol=1e-6)


def test_initialisation_is_seeded_by_the_generator():
    a = Transformer(ModelConfig(**TINY), generator=torch.Generator().manual_seed(3))
    b = Transformer(ModelConfig(**TINY), generator=torch.Generator().manual_seed(3))
    c = Transformer(ModelConfig(**TINY), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.blocks[0].attn.W_Q, b.blocks[0].attn.W_Q)
    assert not torch.equal(a.blocks[0].attn.W_Q, c.blocks[0].attn.W_Q)


def test_pattern_preserving_ablation_keeps_every_later_pattern():
    from iclab.models import frozen_patterns, record_patterns

    model = tiny(attn_only=True)
    x = tokens()
    clean = record_patterns(model, x)
    with frozen_patterns(model, clean):
        torch.testing.assert_close(model(x), tiny(attn_only=True)(x), rtol=1e-5, atol=1e-6)
    with ablate_heads(model, [(0, 0)]):
        moved = record_patterns(model, x)
    assert not torch.allclose(moved[1], clean[1]), "a plain ablation in layer 0 moves layer 1's attention"
    with frozen_patterns(model, clean), ablate_heads(model, [(0, 0)]):
        _, cache = run_with_cache(model, x, names=["blocks.1.attn.hook_pattern"])
        frozen_out = model(x)
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"], clean[1])
    with ablate_heads(model, [(0, 0)]):
        assert not torch.allclose(frozen_out, model(x))


def test_torch_init_uses_the_linear_layer_scale_of_each_weight():
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, input="continuous", d_input=5, init="torch")
    model = Transformer(cfg)
    bounds = {"W_Q": 32, "W_K": 32, "W_V": 32, "W_O": 32, "W_in": 32, "W_out": 128, "b_in": 32, "b_out": 128}
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in bounds:
            bound = 1 / bounds[leaf] ** 0.5
            assert float(p.abs().max()) <= bound and float(p.abs().max()) > 0.8 * bound, name
        if "ln" in name:
            assert torch.all(p == (1.0 if leaf == "weight" else 0.0)), name
    assert abs(float(model.W_pos.std()) - cfg.init_std) < 0.005
    gpt2 = Transformer(ModelConfig(n_layers=2, d_model=32, n_heads=4, input="continuous", d_input=5))
    assert float(gpt2.blocks[0].attn.W_Q.std()) < 0.03 and float(model.blocks[0].attn.W_Q.std()) > 0.08
