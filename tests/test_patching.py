"""Activation and attribution patching: a planted circuit whose answer sits on known sites, self-patching that
changes nothing, and patching through iclab equal to the same edit written by hand with torch hooks."""

import pytest
import torch

from iclab.analysis.patching import PromptPair, agreement, patch, path_patch
from iclab.errors import IclabError
from iclab.heads import HFHeadModel, IclabHeadModel
from iclab.models import ModelConfig, Transformer

V, T = 8, 6  # tokens; prompt length. Residual stream: [token (8) | position (6) | constant (1) | spare (9)]


def copy_position_one() -> IclabHeadModel:
    """One layer, three heads. Head 0 attends from every position to position 1 (a constant query against a
    positional key) and copies the token there to the output; heads 1 and 2 are random and small."""
    cfg = ModelConfig(n_layers=1, d_model=24, n_heads=3, attn_only=True, normalization="none", d_vocab=V, n_ctx=T,
                      positional="learned")
    model = Transformer(cfg, generator=torch.Generator().manual_seed(0))
    tok, pos, const = slice(0, 8), slice(8, 14), 14
    with torch.no_grad():
        model.W_E.zero_()
        model.W_E[:, tok] = torch.eye(V)
        model.W_E[:, const] = 1.0
        model.W_pos.zero_()
        model.W_pos[:, pos] = torch.eye(T)
        model.W_U.zero_()
        model.W_U[tok, :] = torch.eye(V)
        attn = model.blocks[0].attn
        for W in (attn.W_Q, attn.W_K, attn.W_V, attn.W_O):
            W[0].zero_()
            W[1:] *= 0.1
        attn.W_Q[0][const, 0] = 20.0  # the same query everywhere ...
        attn.W_K[0][8 + 1, 0] = 1.0  # ... matches the key of position 1 only
        attn.W_V[0][tok, :] = torch.eye(V)  # and copies its token
        attn.W_O[0][:, tok] = torch.eye(V)
        for b in ("b_Q", "b_K", "b_V", "b_O"):
            if hasattr(attn, b):
                getattr(attn, b).zero_()
    return IclabHeadModel(model)


PAIR = PromptPair(clean=[0, 3, 2, 4, 5, 6], corrupt=[0, 7, 2, 4, 5, 6], answer=3, wrong=7)


def test_the_planted_head_at_the_last_position_carries_the_answer_and_nothing_else_does():
    model = copy_position_one()
    p = patch(model, [PAIR], "heads", "logit_diff", "denoising")
    assert p.effect.shape == (1, 3, T) and p.clean_metric > 0.9 and p.corrupted_metric < -0.9  # +-1: one copied token
    assert p.normalised[0, 0, T - 1] == pytest.approx(1.0, abs=0.02)
    others = p.normalised.copy()
    others[0, 0, T - 1] = 0
    assert abs(others).max() < 0.05
    noised = patch(model, [PAIR], "heads", "logit_diff", "noising")
    assert noised.normalised[0, 0, T - 1] == pytest.approx(1.0, abs=0.02)
    resid = patch(model, [PAIR], "resid", "logit_diff", "denoising")
    assert resid.effect.shape == (2, T)  # the layer's input and the final residual
    assert resid.normalised[0, 1] == pytest.approx(1.0, abs=0.02)  # the corrupted token's own position
    assert resid.normalised[1, T - 1] == pytest.approx(1.0, abs=0.02)  # the last position of the final residual
    assert abs(resid.normalised[0, [0, 2, 3, 4, 5]]).max() < 0.05 and abs(resid.normalised[1, :-1]).max() < 0.05
    attn = patch(model, [PAIR], "attn_out", "logprob", "denoising")
    assert attn.normalised[0, T - 1] == pytest.approx(1.0, abs=0.02)


def test_attribution_matches_exact_patching_where_the_model_is_linear_in_the_site():
    """z at the last position reaches the logits linearly in an attention-only model without norms."""
    model = copy_position_one()
    exact = patch(model, [PAIR], "heads", "logit_diff", "denoising")
    approx = patch(model, [PAIR], "heads", "logit_diff", "denoising", method="attribution")
    assert torch.allclose(torch.tensor(approx.effect), torch.tensor(exact.effect), atol=1e-3)
    a = agreement(exact, approx, k=3)
    assert a.correlation > 0.999 and a.top_k_shared == 3


def test_patching_a_site_with_its_own_activation_changes_nothing_and_pairs_average_with_a_stderr():
    model = copy_position_one()
    same = PromptPair(PAIR.clean, PAIR.clean, 3, 7)
    for site in ("heads", "resid", "attn_out"):
        for method in ("exact", "attribution"):
            p = patch(model, [same, same], site, "logit_diff", method=method)
            assert abs(p.effect).max() < 1e-5 and abs(p.stderr).max() < 1e-5
    two = patch(model, [PAIR, PromptPair([0, 5, 2, 4, 5, 6], [0, 1, 2, 4, 5, 6], 5, 1)], "heads")
    assert two.n_pairs == 2 and two.normalised[0, 0, T - 1] == pytest.approx(1.0, abs=0.02) and two.stderr.shape == two.effect.shape


def test_bad_input_is_one_line():
    model = copy_position_one()
    with pytest.raises(IclabError, match="the clean prompt has 6 tokens and the corrupted one 5"):
        PromptPair([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4], 1, 2)
    with pytest.raises(IclabError, match="site 'mlp' is not one of heads, resid, attn_out, mlp_out, q, k, v"):
        patch(model, [PAIR], "mlp")
    with pytest.raises(IclabError, match="a rank has none"):
        patch(model, [PAIR], metric="rank", method="attribution")
    with pytest.raises(IclabError, match="needs a wrong answer"):
        patch(model, [PromptPair(PAIR.clean, PAIR.corrupt, 3)])



# A two-layer induction circuit that attends for real. Residual stream (24): [token (6) | previous token (6) |
# position (8) | spare (4)]
IND_V, IND_T = 6, 7  # residual stream (24): [token (6) | previous token (6) | position (8) | spare (4)]


def induction_pair_model() -> IclabHeadModel:
    """Two layers, two heads each, attending for real. Head (0, 0) attends from position t to t - 1 (a positional query
    against a shifted positional key) and writes the token there into the 'previous token' subspace; head (1, 0) queries
    with the current token, keys on that subspace and copies the attended token to the output (K-composition). Heads
    (0, 1) and (1, 1) are random and small."""
    cfg = ModelConfig(n_layers=2, d_model=24, n_heads=2, attn_only=True, normalization="none", d_vocab=IND_V, n_ctx=8,
                      positional="learned")
    model = Transformer(cfg, generator=torch.Generator().manual_seed(0))
    tok, prev, pos = slice(0, 6), slice(6, 12), slice(12, 20)
    eye = torch.eye(6)
    with torch.no_grad():
        model.W_E.zero_()
        model.W_E[:, tok] = eye
        model.W_pos.zero_()
        model.W_pos[:, pos] = torch.eye(8)
        model.W_U.zero_()
        model.W_U[tok, :] = eye
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        for a in (a0, a1):
            for W in (a.W_Q, a.W_K, a.W_V, a.W_O):
                W[0].zero_()
                W[1:] *= 0.1
            for b in (a.b_Q, a.b_K, a.b_V, a.b_O):
                b.zero_()
        a0.W_Q[0][12:20, :8] = torch.eye(8)  # query of position t: e_t ...
        a0.W_K[0][12:19, 1:8] = 40 * torch.eye(7)  # ... matches the key of position t - 1
        a0.W_V[0][tok, :6] = eye
        a0.W_O[0][:6, prev] = eye
        a1.W_Q[0][tok, :6] = 40 * eye  # the current token ...
        a1.W_K[0][prev, :6] = eye  # ... against the previous token
        a1.W_V[0][tok, :6] = eye
        a1.W_O[0][:6, tok] = eye
    return IclabHeadModel(model)


# clean: "5 1 2 3 4 1 2" -> 3 (the token after the earlier 2); corrupted: the earlier 2 made 0, so no key matches
IND_PAIR = PromptPair([5, 1, 2, 3, 4, 1, 2], [5, 1, 0, 3, 4, 1, 2], answer=3)


def test_query_key_and_value_patching_find_the_induction_heads_key_and_nothing_in_its_query():
    model = induction_pair_model()
    k = patch(model, [IND_PAIR], "k", "logprob")
    assert k.effect.shape == (2, 2, IND_T) and k.clean_metric - k.corrupted_metric > 0.5
    assert k.normalised[1, 0, 3] == pytest.approx(1.0, abs=0.02)  # the key of the position after the earlier 2
    rest = k.normalised.copy()
    rest[1, 0, 3] = 0
    assert abs(rest).max() < 0.05
    q = patch(model, [IND_PAIR], "q", "logprob")
    assert abs(q.normalised).max() < 1e-3  # the last query is "2" in both prompts
    v = patch(model, [IND_PAIR], "v", "logprob")
    assert v.normalised[0, 0, 2] == pytest.approx(1.0, abs=0.02)  # the previous-token head's value of the changed token
    assert abs(v.normalised[1]).max() < 0.1  # the copied token (3) is the same in both prompts
    for site in ("q", "k", "v"):  # the linear approximation on the same sites, where the change is small
        approx = patch(model, [IND_PAIR], site, "logprob", method="attribution")
        assert approx.effect.shape == k.effect.shape


def test_patching_each_head_at_every_position_at_once_finds_both_planted_heads():
    model = induction_pair_model()
    whole = patch(model, [IND_PAIR], "heads", "logprob", positions="all")
    assert whole.effect.shape == (2, 2) and not whole.each_position
    assert whole.normalised[0, 0] == pytest.approx(1.0, abs=0.02) and whole.normalised[1, 0] == pytest.approx(1.0, abs=0.02)
    assert abs(whole.normalised[:, 1]).max() < 0.05  # the random heads
    approx = patch(model, [IND_PAIR], "heads", "logprob", method="attribution", positions="all")
    assert approx.effect.shape == (2, 2) and approx.effect[1, 0] > 0.5 * whole.effect[1, 0]
    resid = patch(model, [IND_PAIR], "resid", "logprob", positions="all")
    assert resid.effect.shape == (3,) and resid.normalised[0] == pytest.approx(1.0, abs=0.02)  # the whole input: everything


def test_patching_a_set_of_heads_together_restores_everything_only_with_both_planted_heads():
    from iclab.analysis.patching import patch_heads
    from iclab.results import Head

    model = induction_pair_model()
    both = patch_heads(model, [IND_PAIR, IND_PAIR], [Head(0, 0), Head(1, 0)])
    assert both.normalised == pytest.approx(1.0, abs=0.02) and both.stderr == pytest.approx(0.0, abs=1e-6)
    assert patch_heads(model, [IND_PAIR], [Head(1, 0)]).normalised == pytest.approx(1.0, abs=0.02)  # the key's source
    assert abs(patch_heads(model, [IND_PAIR], [Head(0, 1), Head(1, 1)]).normalised) < 0.05  # the random heads


def test_path_patching_finds_k_composition_from_the_previous_token_head_and_no_q_or_v_composition():
    model = induction_pair_model()
    paths = {into: path_patch(model, [IND_PAIR], (1, 0), into, "logprob") for into in "qkv"}
    k = paths["k"]
    assert k.effect.shape == (2, 2) and k.receiver == (1, 0) and torch.isnan(torch.tensor(k.effect[1])).all()
    assert k.normalised[0, 0] == pytest.approx(1.0, abs=0.02) and abs(k.normalised[0, 1]) < 0.05
    assert abs(paths["q"].normalised[0]).max() < 1e-3 and abs(paths["v"].normalised[0]).max() < 0.05  # negative controls
    noised = path_patch(model, [IND_PAIR], (1, 0), "k", "logprob", direction="noising")
    assert noised.normalised[0, 0] > 0.9  # the clean run loses the answer when only that path is corrupted
    same = path_patch(model, [PromptPair(IND_PAIR.clean, IND_PAIR.clean, 3)], (1, 0), "k", "logprob")
    assert abs(same.effect[0]).max() < 1e-5
    with pytest.raises(IclabError, match="receiver 0.0 is not a head after the first layer"):
        path_patch(model, [IND_PAIR], (0, 0), "k")
    with pytest.raises(IclabError, match="into must be q, k or v"):
        path_patch(model, [IND_PAIR], (1, 0), "z")


def test_direct_logit_attribution_puts_the_copied_answer_on_the_induction_head_and_the_parts_sum_to_the_logit():
    from iclab.analysis.lens import direct_logit_attribution

    model = induction_pair_model()
    dla = direct_logit_attribution(model, torch.tensor(IND_PAIR.clean), answer=3, wrong=4)
    assert dla.heads[1, 0] > 0.9 and abs(dla.heads[0, 0]) < 0.05  # the previous-token head writes no token
    assert dla.embed == pytest.approx(0.0, abs=1e-6)  # the current token (2) is neither 3 nor 4
    parts = dla.embed + dla.heads.sum() + dla.attn_bias.sum() + dla.mlp.sum() + dla.bias
    own = model.logits(torch.tensor([IND_PAIR.clean]))[0, -1]
    assert parts == pytest.approx(dla.total, abs=1e-5) and dla.total == pytest.approx(float(own[3] - own[4]), abs=1e-5)
    corrupted = direct_logit_attribution(model, torch.tensor(IND_PAIR.corrupt), answer=3, wrong=4)
    assert corrupted.heads[1, 0] < 0.3  # no match: the head spreads its attention


transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma3_text"])
def test_patching_a_head_equals_the_same_edit_written_by_hand_with_torch_hooks(family):
    from test_heads_hf import tiny

    model = HFHeadModel(tiny(family).eval())  # eval: GPT-2's dropout would make the hand-written runs random
    E, layer, head, t = model.d_head, 0, 2, 3  # layer 0 at the corrupted position: the effect reaches the last one
    pair = PromptPair([5, 9, 11, 9, 23, 40, 17], [5, 9, 11, 30, 23, 40, 17], answer=11, wrong=30)
    p = patch(model, [pair], "heads", "logprob", "denoising")
    proj = model._proj(layer)
    cols = slice(head * E, (head + 1) * E)  # the head's slice of the output projection's input
    kept = {}

    def keep(module, args):
        kept["z"] = args[0].detach().clone()

    def put(module, args):
        x = args[0].clone()
        x[:, t, cols] = kept["z"][:, t, cols]
        return (x, *args[1:])

    with torch.no_grad():
        handle = proj.register_forward_pre_hook(keep)
        model.model(torch.tensor([pair.clean]))
        handle.remove()
        corrupted = torch.log_softmax(model.model(torch.tensor([pair.corrupt])).logits[0, -1].float(), -1)[11]
        handle = proj.register_forward_pre_hook(put)
        by_hand = torch.log_softmax(model.model(torch.tensor([pair.corrupt])).logits[0, -1].float(), -1)[11]
        handle.remove()
    assert abs(float(by_hand - corrupted)) > 5e-5  # the edit matters ...
    assert p.effect[layer, head, t] == pytest.approx(float(by_hand - corrupted), rel=0.02, abs=2e-6)  # ... and iclab makes it too
    assert p.corrupted_metric == pytest.approx(float(corrupted), abs=1e-4)


def test_iclab_patch_writes_heatmaps_and_a_typed_table_and_refuses_bad_prompts_in_one_line(tmp_path):
    import json

    from test_robustness import iclab, one_line_error

    run = tmp_path / "ind"
    done = iclab("train", "--task", "induction", "--out", str(run), "--set", "model.n_layers=2", "--set", "model.d_model=16",
                 "--set", "train.steps=3")
    assert done.returncode == 0, done.stderr
    args = ["patch", str(run), "--clean", "xyzabcxyzab", "--corrupt", "xyzabdxyzab", "--answer", "c", "--wrong", "d"]
    result = iclab(*args, "--out", str(tmp_path / "p"))
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "p" / "patching.json").read_text())
    assert set(record) == {"exact", "attribution", "agreement"}
    assert sorted(p.name for p in (tmp_path / "p" / "figures").glob("*.png")) == ["patching_heads_attribution.png",
                                                                                 "patching_heads_exact.png"]
    assert "attribution vs exact: correlation" in result.stdout
    one_line_error(iclab(*args[:4], "--corrupt", "xyzab", "--answer", "c", "--wrong", "d", "--out", str(tmp_path / "q")),
                   "the clean prompt has 11 tokens and the corrupted one 5")  # bytes, no BOS
    one_line_error(iclab(*args[:6], "--answer", "cd", "--wrong", "d"), "--answer 'cd' is 2 tokens")
    one_line_error(iclab(*args, "--site", "mlp"), "--site 'mlp' is not one of heads, resid, attn_out, mlp_out, q, k, v")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"clean": "xyzabcxyzab", "corrupt": "xyzabdxyzab", "answer": "c", "wrong": "d"}\n'
                     '{"clean": "pqrstupqrst", "corrupt": "pqrstvpqrst", "answer": "u", "wrong": "v"}\n')
    two = iclab("patch", str(run), "--pairs", str(pairs), "--site", "k", "--receiver", "L1H0", "--into", "v",
                "--out", str(tmp_path / "p2"))
    assert two.returncode == 0, two.stderr
    record = json.loads((tmp_path / "p2" / "patching.json").read_text())
    assert record["exact"]["n_pairs"] == 2 and record["path"]["into"] == "v" and "mean of 2 pairs" in two.stdout
    assert (tmp_path / "p2" / "figures" / "path_patching_L1H0_v.png").is_file()
    pairs.write_text('{"clean": "xyz"}\n')
    one_line_error(iclab("patch", str(run), "--pairs", str(pairs)), "pairs.jsonl line 1: expected a JSON object with clean")
    one_line_error(iclab("patch", str(run), "--clean", "xyz"), "missing --corrupt, --answer")
    lens = iclab("lens", str(run), "--prompt", "xyzabcxyzab", "--answer", "c", "--out", str(tmp_path / "lens"))
    assert lens.returncode == 0, lens.stderr
    assert json.loads((tmp_path / "lens" / "lens.json").read_text())["answer"] == ord("c")
    assert (tmp_path / "lens" / "figures" / "logit_lens.png").is_file() and "final" in lens.stdout
    assert (tmp_path / "lens" / "figures" / "logit_attribution.png").is_file() and "all parts sum to" in lens.stdout
    assert json.loads((tmp_path / "lens" / "attribution.json").read_text())["heads"]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma2", "gemma3_text", "olmo2", "phi"])
def test_the_logit_lens_last_row_is_the_models_own_output_for_every_family(family):
    from iclab.analysis.lens import logit_lens
    from test_heads_hf import tiny

    model = HFHeadModel(tiny(family).eval())
    ids = torch.tensor([5, 9, 11, 9, 23, 40, 17])
    lens = logit_lens(model, ids, answer=11)
    own = torch.log_softmax(model.logits(ids.unsqueeze(0))[0], -1)[:, 11]
    assert lens.logprob.shape == (model.n_layers + 1, 7) and lens.rank.shape == (model.n_layers + 1, 7)
    assert torch.allclose(torch.tensor(lens.logprob[-1]), own, atol=1e-4)
    assert not torch.allclose(torch.tensor(lens.logprob[0]), own, atol=1e-3)  # the embeddings alone predict otherwise


def test_the_logit_lens_sees_the_planted_answer_appear_after_the_copying_layer():
    from iclab.analysis.lens import logit_lens

    model = copy_position_one()
    lens = logit_lens(model, torch.tensor(PAIR.clean), answer=3)
    assert lens.top[0][-1] == PAIR.clean[-1] and lens.rank[0, -1] > 0  # before the layer: the current token alone
    assert lens.rank[1, -1] <= 1 and lens.logprob[1, -1] - lens.logprob[0, -1] > 0.5  # after it: the copied one joins it


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "phi3", "gemma3_text", "olmo2"])
def test_patching_a_key_or_an_mlp_output_equals_the_same_edit_written_by_hand(family):
    """q/k/v live in different projections per family (q/k/v_proj, GPT-2's c_attn, NeoX's per-head rows, Phi-3's fused
    qkv_proj); MLP outputs after a norm in Gemma 3 and OLMo 2."""
    from iclab.heads.hf.families import qkv_slice
    from test_heads_hf import tiny

    model = HFHeadModel(tiny(family).eval())
    pair = PromptPair([5, 9, 11, 9, 23, 40, 17], [5, 9, 11, 30, 23, 40, 17], answer=11, wrong=30)
    t = 3  # the corrupted position: a key there is read at the last position in layer 1, an MLP output from layer 0
    for site, layer in (("k", 1), ("mlp_out", 0)):
        p = patch(model, [pair], site, "logprob", "denoising")
        if site == "k":
            module, part = qkv_slice(model._attn(layer), "k", model.n_heads, model.n_kv_heads, model.d_head)
            select = lambda out: part(out)[:, t, 0]  # noqa: E731 (key/value head 0)
            expected_at = (layer, 0, t)
        else:
            name = model.family.post_mlp_norm or model.family.mlp
            module = getattr(model.layers[layer], name)
            select = lambda out: out[:, t]  # noqa: E731
            expected_at = (layer, t)
        kept = {}

        def keep(mod, args, out):
            kept["x"] = select(out).detach().clone()

        def put(mod, args, out):
            out = out.clone()
            select(out).copy_(kept["x"])
            return out

        with torch.no_grad():
            handle = module.register_forward_hook(keep)
            model.model(torch.tensor([pair.clean]))
            handle.remove()
            corrupted = torch.log_softmax(model.model(torch.tensor([pair.corrupt])).logits[0, -1].float(), -1)[11]
            handle = module.register_forward_hook(put)
            by_hand = torch.log_softmax(model.model(torch.tensor([pair.corrupt])).logits[0, -1].float(), -1)[11]
            handle.remove()
        assert abs(float(by_hand - corrupted)) > 1e-5, site
        assert p.effect[expected_at] == pytest.approx(float(by_hand - corrupted), rel=0.02, abs=2e-6), site


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "olmo", "olmo2", "gemma", "gemma2", "gemma3_text", "phi",
                                    "phi3", "qwen3"])
def test_direct_logit_attribution_sums_to_the_models_own_logit_difference_for_every_family(family):
    """Each family's norms folded right: LayerNorm and RMSNorm, OLMo's parameter-free LayerNorm, Gemma's 1 + w and its
    norms after attention and MLP, parallel blocks (NeoX, Phi), Gemma 2's soft-capping undone."""
    from iclab.analysis.lens import direct_logit_attribution
    from test_heads_hf import tiny

    model = HFHeadModel(tiny(family).eval())
    ids = torch.tensor([5, 9, 11, 9, 23, 40, 17])
    dla = direct_logit_attribution(model, ids, answer=11, wrong=30)
    own = model.logits(ids.unsqueeze(0))[0, -1]
    cap = getattr(model.model.config, "final_logit_softcapping", None)
    own = own if cap is None else cap * torch.atanh(own / cap)
    assert dla.total == pytest.approx(float(own[11] - own[30]), abs=1e-4)
    assert dla.embed + dla.attn.sum() + dla.mlp.sum() + dla.bias == pytest.approx(dla.total, abs=1e-4)
    assert dla.heads.sum(1) + dla.attn_bias == pytest.approx(dla.attn, abs=1e-4)  # the heads add up to their layer
    assert abs(dla.heads).max() > 1e-3
    paths = path_patch(model, [PromptPair(ids.tolist(), [5, 9, 11, 30, 23, 40, 17], 11, 30)], (1, 1), "v", "logprob")
    assert paths.effect.shape == (2, 4) and abs(paths.effect[0]).max() > 0 and torch.isnan(torch.tensor(paths.effect[1])).all()


def test_largest_entries_ranks_by_absolute_value_across_any_shape():
    import numpy as np

    from iclab.analysis.ranking import largest_entries

    grid = np.array([[0.1, -3.0, 0.0], [2.0, 0.5, -0.2]])
    assert largest_entries(grid, 3) == [(0, 1), (1, 0), (1, 1)]
    assert largest_entries(np.zeros((2, 2)), 10) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # k beyond the grid: every entry


def test_prompt_pairs_from_texts_or_a_file_and_their_one_line_errors(tmp_path):
    from iclab.analysis.prompt_pairs import encode_pairs, pair_texts

    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, attn_only=True, d_vocab=256, n_ctx=16)
    model = IclabHeadModel(Transformer(cfg, generator=torch.Generator().manual_seed(0)))  # bytes as tokens
    one = pair_texts(None, "ab", "ac", "b", None)
    assert len(one) == 1 and one[0].where == "--"
    with pytest.raises(IclabError, match="missing --corrupt, --answer"):
        pair_texts(None, "ab", None, None, None)
    f = tmp_path / "p.jsonl"
    f.write_text('{"clean": "ab", "corrupt": "ac", "answer": "b"}\n\n{"clean": "xy", "corrupt": "xz", "answer": "y", "wrong": "z"}\n')
    with pytest.raises(IclabError, match="not both"):
        pair_texts(f, "ab", None, None, None)
    two = pair_texts(f, None, None, None, None)
    assert [p.wrong for p in two] == [None, "z"] and two[1].where == "p.jsonl line 2: "
    pairs = encode_pairs(model, two)
    assert pairs[0].clean == [97, 98] and pairs[0].answer == 98 and pairs[0].wrong is None and pairs[1].wrong == 122
    with pytest.raises(IclabError, match=r"p.jsonl line 2: answer 'yy' is 2 tokens"):
        encode_pairs(model, [two[1].__class__(two[1].where, "xy", "xz", "yy")])
    f.write_text("\n")
    with pytest.raises(IclabError, match="holds no pair"):
        pair_texts(f, None, None, None, None)
