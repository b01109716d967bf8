"""Activation and attribution patching: a planted circuit whose answer sits on known sites, self-patching that
changes nothing, and patching through iclab equal to the same edit written by hand with torch hooks."""

import pytest
import torch

from iclab.analysis.patching import PromptPair, agreement, patch
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
    with pytest.raises(IclabError, match="site 'mlp' is not one of heads, resid, attn_out"):
        patch(model, [PAIR], "mlp")
    with pytest.raises(IclabError, match="a rank has none"):
        patch(model, [PAIR], metric="rank", method="attribution")
    with pytest.raises(IclabError, match="needs a wrong answer"):
        patch(model, [PromptPair(PAIR.clean, PAIR.corrupt, 3)])


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
    one_line_error(iclab(*args, "--site", "mlp"), "--site 'mlp' is not one of heads, resid, attn_out")
    lens = iclab("lens", str(run), "--prompt", "xyzabcxyzab", "--answer", "c", "--out", str(tmp_path / "lens"))
    assert lens.returncode == 0, lens.stderr
    assert json.loads((tmp_path / "lens" / "lens.json").read_text())["answer"] == ord("c")
    assert (tmp_path / "lens" / "figures" / "logit_lens.png").is_file() and "final" in lens.stdout


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
