"""Per-head access on tiny random models of each supported Hugging Face family, built offline from configs."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from iclab.errors import IclabError  # noqa: E402
from iclab.heads import HFHeadModel, IclabHeadModel, Intervention, greedy_generate, load_hf  # noqa: E402
from iclab.models import ModelConfig, Transformer  # noqa: E402
from iclab.models.norms import norm_gain  # noqa: E402

V = 64


def tiny(family: str):
    torch.manual_seed(0)
    common = dict(vocab_size=V, bos_token_id=0, eos_token_id=1)
    if family == "llama":
        cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2, **common)
        return transformers.LlamaForCausalLM(cfg)
    if family == "qwen2":
        cfg = transformers.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=1, **common)
        return transformers.Qwen2ForCausalLM(cfg)
    if family == "mistral":
        cfg = transformers.MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, **common)
        return transformers.MistralForCausalLM(cfg)
    llama_like = {"qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=8)),
                  "stablelm": ("StableLmConfig", "StableLmForCausalLM", {}),
                  "olmo": ("OlmoConfig", "OlmoForCausalLM", {}),
                  "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
                  "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(head_dim=8)),
                  "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=8, attn_logit_softcapping=5.0,
                                                                       final_logit_softcapping=3.0)),
                  "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(head_dim=8)),
                  "phi": ("PhiConfig", "PhiForCausalLM", {}),
                  "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(pad_token_id=0))}
    if family in llama_like:
        config_cls, model_cls, extra = llama_like[family]
        cfg = getattr(transformers, config_cls)(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                num_key_value_heads=2, **common, **extra)
        return getattr(transformers, model_cls)(cfg)
    if family == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common))
    if family == "gpt_neox":
        cfg = transformers.GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, **common)
        return transformers.GPTNeoXForCausalLM(cfg)
    raise ValueError(family)


FAMILIES = ["llama", "qwen2", "mistral", "gpt2", "gpt_neox", "qwen3", "stablelm", "olmo", "olmo2", "gemma", "gemma2",
            "gemma3_text", "phi", "phi3"]


def ids(B=3, T=10, seed=1):
    return torch.randint(2, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_head_results_plus_bias_reproduce_the_attention_output(family):
    model = HFHeadModel(tiny(family))
    x = ids()
    outputs = {}
    handle = model._proj(1).register_forward_hook(lambda mod, inp, out: outputs.setdefault("out", out))
    with model.capture_z() as cache:
        model.logits(x)
    handle.remove()
    z = cache.z  # [L, B, T, H, E]
    assert z.shape == (2, 3, 10, 4, 8)
    results = model.head_results(z)  # [L, B, T, H, D]
    rebuilt = results[1].sum(dim=-2) + model.b_O(1)
    assert torch.allclose(rebuilt, outputs["out"], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_head_scaling_equals_editing_the_output_projection_by_hand(family):
    hf = tiny(family)
    model = HFHeadModel(hf)
    x = ids()
    scale = torch.ones(2, 4)
    scale[1, 2] = 0.0
    scale[0, 1] = 0.5
    via_path = model.logits(x, Intervention(head_scale=scale))
    E = model.d_head
    with torch.no_grad():
        for layer, head, factor in ((1, 2, 0.0), (0, 1, 0.5)):
            W = model._proj(layer).weight
            if model.family.conv1d:
                W[head * E : (head + 1) * E, :] *= factor
            else:
                W[:, head * E : (head + 1) * E] *= factor
    by_hand = model.logits(x)
    assert torch.allclose(via_path, by_hand, atol=1e-5)
    assert not torch.allclose(via_path, HFHeadModel(tiny(family)).logits(x), atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_addition_equals_adding_to_the_layer_input_by_hand(family):
    model = HFHeadModel(tiny(family))
    x = ids(B=2, T=6)
    vec = torch.randn(32, generator=torch.Generator().manual_seed(3))
    via_path = model.logits(x, Intervention(add_layer=1, add_vector=vec, start=4))
    layer = model.layers[1]

    def by_hand(mod, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        h = h.clone()
        h[:, 4:] += vec
        if args:
            return (h, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}

    handle = layer.register_forward_pre_hook(by_hand, with_kwargs=True)
    expected = model.logits(x)
    handle.remove()
    assert torch.allclose(via_path, expected, atol=1e-5)
    clean = model.logits(x)
    assert torch.allclose(via_path[:, :4], clean[:, :4], atol=1e-5), "positions before start are untouched"


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_decoding_matches_rerunning_under_an_intervention(family):
    model = HFHeadModel(tiny(family))
    x = ids(B=2, T=7)
    iv = Intervention(add_layer=1, add_vector=torch.randn(32, generator=torch.Generator().manual_seed(5)) * 3, start=6)
    cached = greedy_generate(model, x, 5, iv, use_cache=True)
    rerun = greedy_generate(model, x, 5, iv, use_cache=False)
    assert torch.equal(cached, rerun)


@pytest.mark.parametrize("family", FAMILIES)
def test_patterns_values_and_the_aggregation_identity(family):
    """A head's z at a position is its attention-weighted sum of the values it reads (grouped-query heads included)."""
    model = HFHeadModel(tiny(family))
    x = ids(B=2, T=8)
    pat = model.patterns(x)  # [L, B, H, T, S]
    val = model.values(x)  # [L, B, S, H, E]
    assert pat.shape == (2, 2, 4, 8, 8)
    assert torch.allclose(pat.sum(-1), torch.ones(2, 2, 4, 8), atol=1e-5)
    with model.capture_z() as cache:
        model.logits(x)
    z = cache.z  # [L, B, T, H, E]
    rebuilt = torch.einsum("lbhts,lbshe->lbthe", pat, val)
    bias = 0.0
    assert torch.allclose(rebuilt + bias, z, atol=1e-5)


def test_iclab_models_share_the_interface():
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=V, n_ctx=16)
    model = IclabHeadModel(Transformer(cfg))
    x = ids(B=2, T=8)
    with model.capture_z() as cache:
        model.logits(x)
    results = model.head_results(cache.z)
    from iclab.models import run_with_cache

    _, c = run_with_cache(model.model, x, names=["blocks.1.hook_attn_out"])
    assert torch.allclose(results[1].sum(-2) + model.b_O(1), c["blocks.1.hook_attn_out"], atol=1e-5)
    scale = torch.ones(2, 4)
    scale[0, 3] = 0
    mask = torch.ones(2, 4)
    mask[0, 3] = 0
    assert torch.allclose(model.logits(x, Intervention(head_scale=scale)), model.model(x, head_mask=mask), atol=1e-5)
    from iclab.models import ablate_heads, mean_z

    z_mean = mean_z(model.model, ids(B=3, T=5))  # [L, 5, H, E]: per position, shorter than x (the last one repeats)
    replace = torch.zeros(2, 4, dtype=torch.bool)
    replace[1, 2] = True
    with torch.no_grad(), ablate_heads(model.model, [(1, 2)], "mean", z_mean):
        by_context = model.model(x)
    by_intervention = model.logits(x, Intervention(replace_mask=replace, replace_z=z_mean))
    assert torch.equal(by_context, by_intervention) and not torch.allclose(by_context, model.logits(x))
    rebuilt = torch.einsum("lbhts,lbshe->lbthe", model.patterns(x), model.values(x))
    assert torch.allclose(rebuilt, cache.z, atol=1e-5)
    assert greedy_generate(model, x, 3).shape == (2, 3)


def test_loading_from_a_folder_needs_a_complete_local_folder(tmp_path):
    with pytest.raises(IclabError, match="no such folder"):
        load_hf(tmp_path / "missing")
    (tmp_path / "m").mkdir()
    with pytest.raises(IclabError, match="no config.json"):
        load_hf(tmp_path / "m")
    hf = tiny("gpt2")
    hf.save_pretrained(tmp_path / "m")
    with pytest.raises(IclabError, match="no tokenizer files"):
        load_hf(tmp_path / "m")
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(vocab_size=V, special_tokens=["<bos>", "<unk>"], initial_alphabet=list("0123456789->#"))
    tok.train_from_iterator(["1->2#3->4#10->11"] * 20, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>")
    fast.save_pretrained(tmp_path / "m")
    model = load_hf(tmp_path / "m")
    prompt = model.encode("3->4#5->")
    assert prompt[0] == fast.bos_token_id
    assert model.decode(prompt[1:]).replace(" ", "") == "3->4#5->"
    assert greedy_generate(model, torch.tensor([prompt]), 2).shape == (1, 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_direct_ov_logits_layer_by_layer_for_every_family(family):
    model = HFHeadModel(tiny(family))
    tokens = torch.tensor([3, 5, 7])
    per_layer = model.ov_logits(1, tokens)
    assert per_layer.shape == (4, 3, V) and torch.isfinite(per_layer).all()
    assert torch.allclose(model.direct_ov_logits(tokens)[1], per_layer)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_fast_patterns_stay_within_a_hundredth_of_the_exact_ones(family):
    """The head scores' bf16 pass (where the CPU has bf16): patterns sum to one and move by less than 0.01 (a family that
    returns its pattern in the values' dtype rounds it to bf16's 8 bits)."""
    model = HFHeadModel(tiny(family))
    x = ids(B=2, T=8)
    exact, fast = model.patterns(x), model.patterns(x, fast=True)
    assert fast.dtype == torch.float32 and torch.allclose(fast.sum(-1), torch.ones_like(fast[..., 0]), atol=0.01)
    assert (fast - exact).abs().max() < 0.01


@pytest.mark.parametrize("family", FAMILIES)
def test_direct_ov_logits_among_chosen_columns_are_those_columns_of_the_full_logits(family):
    model = HFHeadModel(tiny(family))
    tokens, columns = torch.tensor([3, 5, 7]), torch.tensor([2, 3, 5, 7, 11, 13])
    full = model.ov_logits(1, tokens)
    # the same sums, a product of another shape: equal up to float rounding (a BLAS kernel blocks V' columns its own way)
    assert torch.allclose(model.ov_logits(1, tokens, columns), full[..., columns], rtol=0, atol=1e-6)
    assert torch.equal(model.ov_logits(1, tokens), full)  # the cached columns follow the request


def test_copying_scores_survive_the_bf16_unembedding_product(monkeypatch):
    """The unembedding product in bfloat16 (where the CPU multiplies it natively) moves no copying score by more than
    0.02 on a random model, whose logits have near-ties a trained model's copying heads do not."""
    import iclab.heads.hf.circuits as hf
    from iclab.analysis.induction.scores import copying_scores

    model = HFHeadModel(tiny("llama"))
    vocab = torch.arange(1, V)
    tokens = vocab[torch.randperm(len(vocab), generator=torch.Generator().manual_seed(0))[:40]]
    fast = copying_scores(model, tokens, vocab)
    monkeypatch.setattr(hf, "OV_PRODUCT_BF16", False)
    model._unembedding = None
    exact = copying_scores(model, tokens, vocab)
    for a, b in zip(fast, exact):
        assert (a - b).abs().max() <= 0.02


def test_an_unsupported_family_says_what_an_adapter_needs():
    cfg = transformers.FalconConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, vocab_size=V)
    with pytest.raises(IclabError, match="an adapter .* names the decoder layers"):
        HFHeadModel(transformers.FalconForCausalLM(cfg))


@pytest.mark.parametrize("family", FAMILIES)
def test_ov_factors_give_the_value_projection_of_every_family(family):
    """W_V from the factors reproduces the family's own value vectors (biases aside) for each query head."""
    model = HFHeadModel(tiny(family))
    E_n, W_V, W_O, U = model.ov_factors(0)
    assert E_n.shape == (V, 32) and W_V.shape == (4, 32, 8) and W_O.shape == (4, 8, 32) and U.shape == (32, V)
    x = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(0))
    attn = model._attn(0)
    v = model.family.values(attn, x, model.n_kv_heads, 8) - model.family.values(attn, torch.zeros_like(x), model.n_kv_heads, 8)
    v = v.repeat_interleave(model.n_heads // model.n_kv_heads, dim=2)  # [1, 5, H, E]
    assert torch.allclose(torch.einsum("btd,hde->bthe", x, W_V), v, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_chunked_ov_core_equals_the_full_factors(family, monkeypatch):
    """U E_n summed over the vocabulary in chunks (a 262k vocabulary never holds [V, D] twice) equals the product of
    the full factors, for every family (chunks of 7 tokens, so the sum has several uneven parts)."""
    import iclab.heads.hf.circuits as hf

    monkeypatch.setattr(hf, "VOCAB_CHUNK", 7)
    model = HFHeadModel(tiny(family))
    for layer in range(model.n_layers):
        E_n, W_V, W_O, U = model.ov_factors(layer)
        W_V2, W_O2, K = model.ov_core(layer)
        assert torch.allclose(K, U @ E_n, atol=1e-4, rtol=1e-4) and torch.equal(W_V, W_V2) and torch.equal(W_O, W_O2)


def randomise_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Every norm's gain (and bias, where it has one) set to random values, so that layers differ by them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name or "layernorm" in name.lower():
                p.copy_(0.5 + torch.rand(p.shape, generator=g) if p.dim() == 1 and not name.endswith("bias")
                        else 0.1 * torch.randn(p.shape, generator=g))


def randomised(family: str) -> torch.nn.Module:
    model = tiny(family)
    randomise_norms(model)
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_the_shared_ov_core_equals_each_layers_own_product(family):
    """U E_n read off one product for every layer (norms differing by gain and bias only) equals each layer's own
    [D, V] x [V, D] product; the check that allows it holds for every family's norms."""
    hf = tiny(family)
    randomise_norms(hf)
    model = HFHeadModel(hf)
    for layer in range(model.n_layers):
        E_n, _, _, U = model.ov_factors(layer)
        assert torch.allclose(model.ov_core(layer)[2], U @ E_n, atol=1e-4, rtol=1e-4)
    if model.family.input_norm is not None:
        assert model._shared_core and model._norm_shares_core(1), "the shared product was not used"


def test_a_layer_whose_norm_differs_by_more_than_its_gain_gets_its_own_product():
    """The negative control: a second layer normalising with another epsilon is not n(x) g + b of the first's n, so
    the check refuses the shared product and the layer's own is computed (equal to the full factors' product)."""
    hf = tiny("llama")
    randomise_norms(hf)
    hf.model.layers[1].input_layernorm.variance_epsilon = 0.5
    model = HFHeadModel(hf)
    E_n, _, _, U = model.ov_factors(1)
    K = model.ov_core(1)[2]
    assert not model._norm_shares_core(1)
    assert torch.allclose(K, U @ E_n, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_folding_the_final_norm_into_the_circuit_gives_the_same_ov_logits(family, monkeypatch):
    """The direct OV logits with the final norm folded into each head's circuit (its scale read off the norm per row)
    equal the per-token product in float32, for every family whose head writes reach the final norm unnormalised;
    families with a norm after attention (Gemma 2 / 3, OLMo 2) take the per-token product."""
    import iclab.heads.hf.circuits as hf

    monkeypatch.setattr(hf, "OV_PRODUCT_BF16", False)
    model = HFHeadModel(randomised(family))
    tokens, columns = torch.arange(2, 40), torch.arange(0, V, 2)
    monkeypatch.setattr(hf, "FOLD_FINAL_NORM", False)
    direct = model.ov_logits(1, tokens, columns)
    monkeypatch.setattr(hf, "FOLD_FINAL_NORM", True)
    folded = model.ov_logits(1, tokens, columns)
    assert (model._folded is not None) == (model.family.post_attn_norm is None)
    assert torch.allclose(folded, direct, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.ov_logits(1, tokens, columns, float32=False).float(), folded)


def test_a_final_norm_of_another_form_is_not_folded(monkeypatch):
    """The negative control: a final norm that is not g * centre(x) * scale + b (here tanh after an RMSNorm) fails the
    check, so the logits come from the per-token product, equal to the norm applied then unembedded."""
    import iclab.heads.hf.circuits as hf

    monkeypatch.setattr(hf, "OV_PRODUCT_BF16", False)
    hf_model = randomised("llama")
    rms = hf_model.model.norm
    hf_model.model.norm = torch.nn.Sequential(rms, torch.nn.Tanh())
    model = HFHeadModel(hf_model)
    tokens = torch.arange(2, 20)
    logits = model.ov_logits(1, tokens)
    assert model._folded is None
    x = model.model.get_input_embeddings()(tokens)
    v = model.family.values(model._attn(1), model.layers[1].input_layernorm(x.unsqueeze(0)), model.n_kv_heads, model.d_head)[0]
    result = torch.einsum("hne,hed->hnd", v.repeat_interleave(2, dim=1).transpose(0, 1), model.W_O(1))
    assert torch.allclose(logits, hf_model.lm_head(hf_model.model.norm(result)), atol=1e-5)


def test_wrapping_and_analysing_leave_the_callers_model_as_it_was():
    hf = tiny("llama").train()
    hf.config._attn_implementation = "sdpa"
    model = HFHeadModel(hf)
    x = ids(B=2, T=6)
    model.logits(x)
    model.patterns(x)
    model.values(x)
    greedy_generate(model, x, 2)
    assert hf.training and all(p.requires_grad for p in hf.parameters())
    assert hf.config._attn_implementation == "sdpa"
    assert all(model._attn(i).config._attn_implementation == "sdpa" for i in range(model.n_layers))
    with pytest.raises(IclabError, match="add_layer"):
        greedy_generate(model, x, 3, Intervention(add_layer=9, add_vector=torch.zeros(32), start=7))
    assert model._offset == 0
    own = Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=V, n_ctx=8)).train()
    IclabHeadModel(own).patterns(ids(B=1, T=5))
    assert own.training and all(p.requires_grad for p in own.parameters())


def test_induction_head_scores_are_one_call_on_an_iclab_run_and_on_a_hugging_face_model(tmp_path):
    from iclab.analysis.induction.scores import score_heads
    from iclab.heads import from_run
    from iclab.train import apply_overrides, default_config, train

    config = apply_overrides(default_config("induction"), ["task.natural_share=0", "model.n_layers=2", "model.d_model=16",
                                                            "model.n_heads=2", "model.attn_only=true", "train.steps=2"])
    train(config, tmp_path / "run", "cpu", progress=False)

    class Tok:  # a tokenizer-less HF model scores on ids from its config
        all_special_ids = [0, 1]

        def __len__(self):
            return V

    scores = {}
    for name, model in (("iclab", from_run(tmp_path / "run")), ("hf", HFHeadModel(tiny("llama"), Tok()))):
        scores[name] = score_heads(model, torch.Generator().manual_seed(0), batch=4, n_ov_tokens=8)
        L, H = model.n_layers, model.n_heads
        assert all(v.shape == (L, H) for v in scores[name].values())
    assert set(scores["iclab"]) == set(scores["hf"])


@pytest.mark.parametrize("family", ["llama", "gemma2", "olmo2", "gpt2", "qwen3"])
def test_a_mid_residual_addition_equals_adding_to_the_next_layers_input_when_the_mlp_is_silenced(family):
    """Adding v after layer 0's attention (add_site='mid') is adding v to layer 1's input once layer 0's MLP writes nothing."""
    hf = tiny(family)
    with torch.no_grad():
        mlp = hf.transformer.h[0].mlp.c_proj if family == "gpt2" else hf.model.layers[0].mlp.down_proj
        mlp.weight.zero_()
        if getattr(mlp, "bias", None) is not None:
            mlp.bias.zero_()
    model = HFHeadModel(hf)
    x = ids(B=2, T=7)
    v = torch.randn(32, generator=torch.Generator().manual_seed(4))
    mid = model.logits(x, Intervention(add_layer=0, add_site="mid", add_vector=v, start=3, stop=5))
    pre = model.logits(x, Intervention(add_layer=1, add_site="pre", add_vector=v, start=3, stop=5))
    assert torch.allclose(mid, pre, atol=1e-5)
    clean = model.logits(x)
    assert torch.allclose(mid[:, :3], clean[:, :3], atol=1e-6) and not torch.allclose(mid[:, 3:], clean[:, 3:], atol=1e-4)


def test_parallel_blocks_have_no_mid_residual():
    model = HFHeadModel(tiny("phi"))
    with pytest.raises(IclabError, match="no mid-residual"):
        model.logits(ids(), Intervention(add_layer=0, add_site="mid", add_vector=torch.zeros(32)))


def test_iclab_mid_residual_addition_equals_a_hand_hook_on_resid_mid():
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=V, n_ctx=16)
    model = IclabHeadModel(Transformer(cfg, generator=torch.Generator().manual_seed(2)))
    x = ids(B=2, T=8)
    v = torch.randn(32, generator=torch.Generator().manual_seed(5))
    via = model.logits(x, Intervention(add_layer=1, add_site="mid", add_vector=v, start=6, stop=7))

    def by_hand(mod, inp, out):
        out = out.clone()
        out[:, 6:7] += v
        return out

    handle = model.model.blocks[1].hook_resid_mid.register_forward_hook(by_hand)
    try:
        expected = model.logits(x)
    finally:
        handle.remove()
    assert torch.allclose(via, expected, atol=1e-5)


def _module_queries_keys(attn, x: torch.Tensor, H: int, kv: int, E: int, D: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries [T, H*E] and keys [T, kv*E] from the attention module's own forward projections (biases removed), in the
    layout each family's attention splits them by (GPT-NeoX: per head [q | k | v])."""
    zero = torch.zeros_like(x)
    if hasattr(attn, "q_proj"):
        return attn.q_proj(x) - attn.q_proj(zero), attn.k_proj(x) - attn.k_proj(zero)
    if hasattr(attn, "c_attn"):
        y = attn.c_attn(x) - attn.c_attn(zero)
        return y[:, :D], y[:, D : 2 * D]
    if hasattr(attn, "query_key_value"):
        y = (attn.query_key_value(x) - attn.query_key_value(zero)).view(len(x), H, 3 * E)
        return y[..., :E].reshape(len(x), H * E), y[..., E : 2 * E].reshape(len(x), H * E)
    y = attn.qkv_proj(x) - attn.qkv_proj(zero)
    return y[:, : H * E], y[:, H * E : (H + kv) * E]


@pytest.mark.parametrize("family", FAMILIES)
def test_circuit_weights_give_the_query_and_key_projections_of_every_family(family):
    """W_Q, W_K (the input norm's gain folded in) reproduce the family's own queries and keys before rotary embeddings,
    per query head, biases and the norm's offset aside; families that normalise queries and keys are refused in one line."""
    model = HFHeadModel(tiny(family))
    if family in ("qwen3", "olmo2", "gemma3_text"):
        with pytest.raises(IclabError, match="queries and keys are normalised"):
            model.circuit_weights(0)
        return
    W_Q, W_K, W_V, W_O = model.circuit_weights(0)
    H, kv, E, D = 4, model.n_kv_heads, 8, 32
    assert W_Q.shape == W_K.shape == W_V.shape == (H, D, E) and W_O.shape == (H, E, D)
    attn, norm = model._attn(0), getattr(model.layers[0], model.family.input_norm)
    xhat = torch.randn(5, D, generator=torch.Generator().manual_seed(0))  # a normalised input, before the norm's gain
    with torch.no_grad():
        q, k = _module_queries_keys(attn, norm_gain(norm, D) * xhat, H, kv, E, D)
    assert torch.allclose(torch.einsum("td,hde->the", xhat.double(), W_Q).float(), q.view(5, H, E), atol=1e-5)
    k = k.view(5, kv, E).repeat_interleave(H // kv, dim=1)
    assert torch.allclose(torch.einsum("td,hde->the", xhat.double(), W_K).float(), k, atol=1e-5)


def test_composition_scores_run_on_a_hugging_face_model():
    from iclab.analysis.circuits import composition_scores

    comp = composition_scores(HFHeadModel(tiny("llama")))
    assert comp.k.shape == (2, 4, 2, 4) and torch.isfinite(comp.k[0, :, 1, :]).all() and torch.isnan(comp.k[1, :, 0, :]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_patterns_of_the_same_ids_change_nothing_and_others_take_over(family):
    """Known answer: pinning the patterns the model itself computes reproduces its logits; control: pinning every head
    to the previous token changes them (the pins act); the model attends as before afterwards."""
    model = HFHeadModel(tiny(family))
    a = ids(seed=1)
    clean = model.logits(a)
    recorded = model.patterns(a)  # [L, B, H, T, T]
    with model.frozen_patterns(recorded):
        same = model.logits(a)
    T = a.shape[1]
    previous = torch.zeros(T, T)
    previous[torch.arange(T), (torch.arange(T) - 1).clamp(min=0)] = 1.0
    with model.frozen_patterns(previous.expand_as(recorded).contiguous()):
        other = model.logits(a)
    assert torch.allclose(same, clean, atol=1e-4)
    assert (other - clean).abs().max() > 1e-2
    assert torch.allclose(model.logits(a), clean, atol=1e-6)


def _resumed_pass_checks(model, x, atol=0.0):
    """A layer-1 ablation resumed from layer 1's recorded input gives the whole pass's logits (exactly, or to ``atol``
    where hooks change the attention's path), without running layer 0's attention; resumed from other sequences'
    stream (the negative control) it gives other logits."""
    scale = torch.ones(2, 4)
    scale[1, 2] = 0
    iv = Intervention(head_scale=scale)
    assert iv.first_layer_changed() == 1 and Intervention(head_scale=torch.ones(2, 4)).first_layer_changed() is None
    with model.recording_resid(1) as kept:
        clean = model.logits(x)
    whole = model.logits(x, iv)
    calls = []
    handle = model._layer_module(0).register_forward_hook(lambda *a: calls.append(1))
    attn0 = [m for m in model._layer_module(0).modules() if m is not model._layer_module(0)][0]
    inner = attn0.register_forward_hook(lambda *a: calls.append("inner"))
    try:
        with model.resumed_at(1, kept[0]):
            resumed_clean, resumed = model.logits(x), model.logits(x, iv)
        with model.resumed_at(1, kept[0].flip(0)):
            other = model.logits(x)
    finally:
        handle.remove()
        inner.remove()
    assert torch.equal(resumed_clean, clean) and torch.allclose(resumed, whole, rtol=0, atol=atol)
    assert not torch.allclose(resumed, clean)
    assert "inner" not in calls and len(calls) == 3  # layer 0 answered from the record, its insides never ran
    assert not torch.allclose(other, clean)
    assert torch.equal(model.logits(x), clean)  # the skip is gone after the block
    with pytest.raises(IclabError, match="recorded residual stream has shape"), model.resumed_at(1, kept[0][:1]):
        model.logits(x)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_pass_resumed_from_a_recorded_residual_stream_equals_the_whole_pass(family):
    _resumed_pass_checks(HFHeadModel(tiny(family)), ids())


def test_an_iclab_model_resumes_from_a_recorded_residual_stream_too():
    model = IclabHeadModel(Transformer(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=V, n_ctx=16),
                                       generator=torch.Generator().manual_seed(0)))
    _resumed_pass_checks(model, ids(B=3, T=8), atol=1e-6)  # a hook on z takes the explicit attention path: last bits differ


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_at_chosen_positions_are_those_positions_of_the_whole_pass(family):
    import iclab.analysis.induction.evidence as E

    model = HFHeadModel(tiny(family))
    x = ids(T=12)
    positions = torch.tensor([9, 2, 5])
    whole = model.logits(x)
    part = model.logits(x, positions=positions)
    assert part.shape == (3, 3, whole.shape[-1])
    assert torch.allclose(part, whole[:, positions], atol=1e-6)
    assert not torch.allclose(part[:, 0], part[:, 1])  # each position its own logits (the negative control)
    losses = E.token_losses(model, x, batch=2)
    assert torch.allclose(E.token_losses(model, x, batch=2, positions=positions), losses[:, positions], atol=1e-6)
