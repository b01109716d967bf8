"""add-k analyses on constructions whose answers are known: planted heads, planted periodic features, the identity."""

import numpy as np
import pytest
import torch

from iclab.analysis import addk as A
from iclab.analysis.addk import subspaces
from iclab.errors import IclabError
from iclab.heads import IclabHeadModel
from iclab.models import ModelConfig, Transformer
from iclab.results import Head
from iclab.tasks import number_functions as F
from iclab.tasks.addk import AddKConfig, AddKTask, DigitTokenizer, NumberTokenizer, prompt_text


def test_number_tokenizer_round_trips_arrow_prompts_and_rejects_what_it_cannot_read():
    tok = NumberTokenizer(-30, 130)
    text = prompt_text([3, 7, 12], [5, 9, 14])
    assert text == "3->5#7->9#12->"
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and len(ids) == 1 + 4 * 2 + 2
    assert tok.decode(ids[1:]) == text
    assert tok.decode(tok.encode("5->-3", bos=False)) == "5->-3"
    with pytest.raises(IclabError, match="outside"):
        tok.encode("500->1")
    with pytest.raises(IclabError, match="cannot tokenize"):
        tok.encode("3 plus 4")


def test_training_batches_follow_the_rule_and_hold_out_tasks():
    cfg = AddKConfig()
    task = AddKTask(cfg)
    b = task.batch(0, 256, "train")
    tok = task.tok
    x = b.inputs[:, 1::4] + tok.lo - 3  # [B, shots + 1]
    y = b.inputs[:, 3::4] + tok.lo - 3
    assert torch.equal(y - x, b.extras["k"].unsqueeze(1).expand_as(y))
    assert not set(b.extras["k"].tolist()) & set(cfg.held_out)
    assert b.inputs.shape[1] == cfg.seq_len() == cfg.model_io()["n_ctx"]


def test_the_training_mix_varies_shots_and_positions_and_hides_its_wrong_labels_from_the_loss():
    cfg = AddKConfig(min_shots=1, max_offset=6, label_noise=0.2)
    task = AddKTask(cfg)
    shots, offsets, wrong_total = set(), set(), 0
    for step in range(40):
        b = task.batch(step, 128, "train")
        tok = task.tok
        offset = int((b.inputs[0, 1:] == tok.sep_id).long().cumprod(0).sum())  # the leading "#"s
        body = b.inputs[:, 1 + offset:]
        n = (body.shape[1] - 3) // 4
        shots.add(n)
        offsets.add(offset)
        assert 1 + body.shape[1] == cfg.seq_len(n) and b.inputs.shape[1] <= cfg.model_io()["n_ctx"]
        x = body[:, 0::4] + tok.lo - 3
        y = body[:, 2::4] + tok.lo - 3
        right = (y - x) == b.extras["k"].unsqueeze(1)
        label = b.extras["label"][:, 1 + offset:][:, 2::4]
        assert torch.equal(label, right)  # the loss sees exactly the right labels ...
        assert right[:, -1].all()  # ... the query's answer always among them
        wrong_total += int((~right).sum())
    assert shots == set(range(1, 6)) and len(offsets) > 3 and wrong_total > 0
    assert AddKTask(AddKConfig()).batch(3, 8, "train").inputs.equal(AddKTask(AddKConfig(max_offset=0)).batch(3, 8, "train").inputs)


def test_a_mix_of_operations_writes_each_prompt_in_one_of_them():
    cfg = AddKConfig(label_noise=0.1, mix_ops=("sub",))
    task = AddKTask(cfg)
    assert cfg.number_range() == (1 - cfg.k_max, cfg.x_max + cfg.k_max) and task.tok.lo == 1 - cfg.k_max
    b = task.batch(0, 256, "train")
    x = b.inputs[:, 1::4] + task.tok.lo - 3
    y = b.inputs[:, 3::4] + task.tok.lo - 3
    k = b.extras["k"].unsqueeze(1)
    label = b.extras["label"][:, 3::4]
    added, subtracted = ((y - x) == k)[label].reshape(-1), ((x - y) == k)[label].reshape(-1)
    assert bool((added | subtracted).all())  # every trusted label is x + k or x - k ...
    per_prompt = ((y - x == k) | ~label).all(1), ((x - y == k) | ~label).all(1)
    assert bool((per_prompt[0] | per_prompt[1]).all())  # ... one operation per prompt ...
    assert 0.35 < float(per_prompt[0].float().mean()) < 0.65  # ... drawn evenly
    with pytest.raises(IclabError, match="mix_ops"):
        AddKConfig(mix_ops=("add",))


def test_digit_tokens_write_every_number_in_the_same_number_of_digits():
    tok = DigitTokenizer(-30, 130)
    assert tok.width == 4 and tok.vocab_size == 15
    ids = tok.encode("7->-23#")
    assert len(ids) == 1 + 4 + 1 + 4 + 1 and tok.decode(ids[1:]) == "7->-23#"
    assert tok.number_ids(torch.tensor([7, -23, 130])).tolist() == [[3, 5, 5, 12], [4, 5, 7, 8], [3, 6, 8, 5]]
    cfg = AddKConfig(digits=True, shots=3)
    task = AddKTask(cfg)
    assert task.tok.width == 3  # add: numbers 1..130, no sign
    b = task.batch(0, 64, "train")
    assert b.inputs.shape[1] == cfg.seq_len() == 1 + 8 * 3 + 7
    digits = b.inputs[:, 1:25].view(64, 3, 8)[:, :, :7]  # each shot: x x x -> y y y #
    value = lambda t: (t - 5) @ torch.tensor([100, 10, 1])  # noqa: E731
    x, y = value(digits[..., :3]), value(digits[..., 4:7])
    assert torch.equal(y - x, b.extras["k"].unsqueeze(1).expand_as(y))
    last = b.inputs[:, -7:]
    assert torch.equal(value(last[:, 4:]) - value(last[:, :3]), b.extras["k"])
    assert int(b.extras["label"].sum()) == 64 * 4 * 3  # three tokens per label


def test_a_digit_model_runs_through_the_prompts_and_the_greedy_answers():
    cfg = AddKConfig(digits=True, shots=2)
    mcfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, **cfg.model_io())
    model = IclabHeadModel(Transformer(mcfg, torch.Generator().manual_seed(0)), cfg.tokenizer())
    prompts = A.make_prompts(model, cfg, [3, 4], 3, 2, torch.Generator().manual_seed(0))
    p = prompts[0]
    assert len(p.answer) == 3 and [len(pos) for pos in p.labels] == [3, 3]
    assert model.decode([p.ids[t] for t in p.labels[1]]).lstrip("0") == str(p.ys[1])
    assert A.correct(model, prompts).shape == (6,)


def own_model(n_layers=2, seed=0):
    cfg = AddKConfig(shots=3)
    mcfg = ModelConfig(n_layers=n_layers, d_model=32, n_heads=4, **cfg.model_io())
    return IclabHeadModel(Transformer(mcfg, torch.Generator().manual_seed(seed)), cfg.tokenizer()), cfg


def test_prompts_know_where_every_label_token_is():
    model, cfg = own_model()
    p = A.encode_prompt(model, 4, [3, 10, 20, 50], [7, 14, 24, 54])
    assert p.labels == [[3], [7], [11]]
    assert [model.decode([p.ids[t]]) for t in (3, 7, 11)] == ["7", "14", "24"]
    assert model.decode(p.answer) == "54"


def test_the_aggregation_extraction_identity_holds_on_real_forward_passes():
    model, cfg = own_model()
    prompts = A.make_prompts(model, cfg, [1, 5, 9], 6, 3, torch.Generator().manual_seed(0))
    U = np.linalg.qr(np.random.default_rng(0).normal(size=(32, 3)))[0].T  # [3, D] orthonormal rows
    ex = A.extraction(model, 1, 2, U, prompts)
    assert ex.identity_error < 1e-4
    assert 0 <= ex.attention_label_share <= 1 and 0 <= ex.signal_label_share <= 1
    assert ex.signals.shape == (18, 3, 3)
    assert ex.position_attention.sum() == pytest.approx(1.0, abs=1e-5)
    assert ex.signals_full.shape == (18, 3, 32) and ex.label_attention.shape == (18, 3) and ex.output.shape == (18, 32)
    assert np.allclose(ex.signals_full @ U.T, ex.signals, atol=1e-5)  # the same signals, in the prompts' order


def _planted(aligned_attention: bool, n: int = 200, demos: int = 5, D: int = 12, seed: int = 0) -> A.Extraction:
    """Signals s_i = h_k + noise whose size varies by demonstration; attention on a label rises with its alignment
    (``aligned_attention``) or is random."""
    g = np.random.default_rng(seed)
    hk = g.normal(size=(n, D))
    noise = g.normal(size=(n, demos, D)) * g.uniform(0.2, 3.0, size=(n, demos, 1))
    s = hk[:, None, :] + noise
    cos = subspaces._cosines(s, hk[:, None, :])
    a = np.exp(4 * cos) if aligned_attention else g.uniform(size=(n, demos))
    a = 0.9 * a / a.sum(1, keepdims=True)
    ex = A.Extraction(0.0, 0.9, 0.9, s[..., :3], np.zeros(1), np.zeros(1), s, a, 5.0, np.einsum("nd,nde->ne", a, s))
    return ex, hk


def test_signal_routing_tells_attention_that_prefers_aligned_labels_from_random_attention():
    ex, hk = _planted(True)
    basis = np.eye(12)[:6]
    r = A.signal_routing(ex, hk, basis)
    assert r.routing.ci[0] > r.routing_null.ci[1] and r.routing.mean > 0.5
    assert r.weighting_gain.mean > 0 and r.weighting_gain.ci[0] > r.weighting_gain_null.ci[1]
    assert abs(r.routing_null.mean) < 0.05 and 0 < r.ondemo_cosine.mean < 1
    flat = A.signal_routing(*_planted(False), basis)
    assert flat.routing.ci[0] < 0.1 < r.routing.ci[0]


def test_a_wrong_demonstration_is_read_off_its_signal_and_attention():
    clean, hk = _planted(True, seed=1)
    wrong_s = clean.signals_full.copy()
    wrong_s[:, 0] = -hk  # the first demonstration now points away from the task
    a = clean.label_attention.copy()
    a[:, 0] *= 0.1  # ... and gets less attention
    wrong = A.Extraction(0.0, 0.9, 0.9, wrong_s[..., :3], np.zeros(1), np.zeros(1), wrong_s, a, 5.0,
                         np.einsum("nd,nde->ne", a, wrong_s))
    w = A.wrong_demonstration(clean, wrong, hk, 0)
    assert w.signal_cosine_wrong == pytest.approx(-1.0) and w.signal_cosine_clean > 0.3
    assert w.attention_share_wrong < w.attention_share_clean
    assert 0 < w.output_cosine_wrong < w.output_cosine_clean


def test_periodic_fit_recovers_planted_features_and_their_phase():
    k = np.arange(1, 31)
    y = 2.0 * np.cos(2 * np.pi * k / 5 + 1.3) + 0.05 * np.random.default_rng(0).normal(size=30)
    fit = A.periodic_fit(k, y)
    assert fit["mod5"].r2 > 0.98
    assert fit["mod5"].theta == pytest.approx(1.3, abs=0.02)
    assert max(v.r2 for name, v in fit.items() if name != "mod5") < 0.3
    fit10 = A.periodic_fit(k, np.sin(2 * np.pi * k / 10))
    assert fit10["mod10s"].r2 > 0.99
    e = np.eye(8)
    pca = A.head_pca(np.outer(np.cos(2 * np.pi * k / 10), e[0]) + np.outer(np.sin(2 * np.pi * k / 10), e[3]))
    assert pca.n_95 == 2


def test_gap_bh_and_mcnemar():
    mask = torch.tensor([[0.9, 0.05, 0.85], [0.1, 0.8, 0.0]])
    assert sorted(A.largest_gap_set(mask)) == [(0, 0), (0, 2), (1, 1)]
    assert A.benjamini_hochberg([0.001, 0.2, 0.01, 0.04], 0.05) == [True, False, True, False]
    assert A.mcnemar_one_sided(30, 0) < 1e-8 and A.mcnemar_one_sided(0, 0) == 1.0
    assert A.mcnemar_one_sided(5, 5) == pytest.approx(0.623, abs=1e-3)  # P[Bin(10, 1/2) >= 5]
    assert A.mcnemar_one_sided(0, 30) == 1.0


def test_single_head_sufficiency_finds_the_head_whose_scaled_mean_recovers_the_task():
    """Head L0H1's outcomes improve with c on 40 of 60 examples (fixed), head L1H0's only flip at random (half fixed,
    half broken), head L1H2 never changes: the paired test with Bonferroni and BH keeps L0H1 alone, and the unified
    rule calls the heads whose peak gain reaches a quarter of the best main."""
    rng = np.random.default_rng(0)
    N, grid = 60, [0, 1, 2, 3]
    base = np.zeros(N, dtype=bool)
    strong = np.stack([base] + [np.arange(N) < 40] * 3)
    flips = rng.random((3, N)) < 0.2
    noisy = np.stack([base | (np.arange(N) >= 50)] + [(base | (np.arange(N) >= 50)) ^ f for f in flips])
    flat = np.stack([base] * 4)
    h01, h10, h12 = Head(0, 1), Head(1, 0), Head(1, 2)
    sig = A.paired_significance({h01: strong, h10: noisy, h12: flat}, grid, q=0.05)
    assert sig[h01].significant and not sig[h10].significant and not sig[h12].significant
    assert sig[h01].c_star == 1 and sig[h01].fixed == 40 and sig[h01].broken == 0
    curves = {h01: {0: 0.0, 1: 0.67}, h10: {0: 0.1, 1: 0.3}, h12: {0: 0.2, 1: 0.2}}
    rule = A.unified_main_heads(curves, clean_accuracy=0.9)
    assert rule.main == [h01, h10] and rule.best_gain == pytest.approx(0.67)
    assert A.unified_main_heads(curves, clean_accuracy=0.1).main == []  # no task behaviour: no main head


def test_mask_optimisation_recovers_planted_task_carrying_heads():
    """Heads (0, 1) and (0, 3) write the direction the unembedding reads as the answer (head 1 for tasks 0-1,
    head 3 for tasks 2-3, so both are needed); the others write noise."""
    torch.manual_seed(0)
    K, D, V = 4, 16, 12
    cfg = ModelConfig(n_layers=1, d_model=D, n_heads=4, attn_only=True, normalization="none", d_vocab=V, n_ctx=8)
    net = Transformer(cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.blocks[0].attn.W_V.zero_()
        net.W_U.zero_()
        for k in range(K):
            net.W_U[k, 4 + k] = 4.0  # direction k -> answer token 4 + k
    model = IclabHeadModel(net)
    results = 0.3 * torch.randn(K, 1, 4, D)
    for h in (1, 3):
        results[:, 0, h] = 0.0
    for k in range(K):
        results[k, 0, 1 if k < 2 else 3, k] = 3.0
    prompts = [A.Prompt(k=k, xs=[], ys=[], ids=[0, 1 + (i % 3), 3], answer=[4 + k], labels=[]) for k in range(K) for i in range(16)]
    # injected after layer 0's attention (its mid-residual: in this attention-only model, what the unembedding reads)
    fit = A.optimise_mask(model, results, list(range(K)), prompts, 0, torch.Generator().manual_seed(1), lam=0.05, lr=0.05, epochs=60, batch=32)
    assert sorted(A.largest_gap_set(fit.mask)) == [(0, 1), (0, 3)]
    assert fit.losses[-1] < fit.losses[0]
    right = A.correct(model, prompts, A.fv_intervention(results, A.heads_mask([(0, 1), (0, 3)], 1, 4), 0, list(range(K))))
    assert right.mean() == 1.0


def test_the_joint_periodic_fit_finds_a_cos_sin_pair_spread_over_rotated_pcs_that_one_pc_fits_miss():
    k = np.arange(1, 31)
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 3)))
    u0, u1, u2 = Q.T
    cos10, sin10 = np.cos(2 * np.pi * k / 10), np.sin(2 * np.pi * k / 10)
    X = np.outer(3 * (k - k.mean()) / k.std(), u0) + np.outer(cos10, u1) + np.outer(sin10, 0.8 * u1 + 0.6 * u2)
    joint = A.mod_vector_fit(X, k)
    assert joint.r2["mod10c"] > 0.99 and joint.r2["mod10s"] > 0.99
    assert joint.mod_vectors.shape == (16, 6)
    pca = A.head_pca(X)
    one_pc = [A.periodic_fit(k, pca.coords[:, i]) for i in range(4)]
    assert max(f["mod10c"].r2 for f in one_pc) < 0.6 and max(f["mod10s"].r2 for f in one_pc) < 0.6


def test_projection_arms_split_the_six_dimensional_span_and_the_fv_follows_the_authors_formula():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(20, 6))  # six mod vectors in a 20-dimensional residual stream
    onto, out = A.projection_basis(M, "unit", "onto"), A.projection_basis(M, "unit", "out")
    assert onto.shape == (20, 4) and out.shape == (20, 2)
    assert np.abs(onto.T @ out).max() < 1e-10  # the two arms are orthogonal ...
    both = np.concatenate([onto, out], axis=1)
    assert np.abs(both @ (both.T @ M) - M).max() < 1e-10  # ... and together span the six mod vectors
    assert A.projection_basis(M, "parity", "onto").shape == (20, 1) and A.projection_basis(M, "magnitude", "out").shape == (20, 4)
    results = torch.from_numpy(rng.normal(size=(5, 2, 3, 20)))  # [K, L, H, D]
    fv = A.projected_fv(results, (1, 2), [(0, 0)], onto, c=3.0).double()
    r = results[:, 1, 2]
    mu = r.mean(0)
    B = torch.from_numpy(onto)
    expected = 3.0 * ((r - mu) @ B @ B.T + mu) + results[:, 0, 0].mean(0)
    torch.testing.assert_close(fv, expected, rtol=1e-5, atol=1e-5)
    whole = A.projected_fv(results, (1, 2), [], None, c=1.0).double()
    torch.testing.assert_close(whole, r, rtol=1e-5, atol=1e-5)  # no projection, c = 1, no other heads: the result itself


@pytest.mark.parametrize("digits", [False, True])
def test_the_tvp_loss_patches_the_same_site_the_task_vector_analysis_reads(digits):
    """Yang et al.'s TVP loss = few-shot loss + weight x the zero-shot query's loss with the prompt's residual entering
    tvp_layer at the query's arrow put in its place: recomputed here through HeadModel's replace intervention."""
    import torch.nn.functional as F

    from iclab.models.intervention import Intervention

    cfg = AddKConfig(k_max=6, held_out=(2,), x_max=20, max_offset=2, digits=digits, tvp_layer=1, tvp_weight=0.5)
    task, w = AddKTask(cfg), cfg.tokenizer().width
    mcfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, **cfg.model_io())
    net = Transformer(mcfg, torch.Generator().manual_seed(0))
    batch = task.batch(3, 8, "train")
    total = task.model_loss(net, net, batch)
    few = task.loss(net(batch.inputs), batch)
    model, ids = IclabHeadModel(net, cfg.tokenizer()), batch.inputs
    kept = {}

    def keep(resid):
        kept["v"] = resid[:, ids.shape[1] - w - 1].clone()
        return resid

    with model.hooked(resid={1: keep}):
        model.logits(ids)
    zero = batch.extras["tvp_zero"]  # a zero-shot query of the same task with a new x
    tok = cfg.tokenizer()
    for row, k in zip(zero.tolist(), batch.extras["k"].tolist()):
        x, y = (int(v) for v in tok.decode(row[1:]).split("->"))  # "x'->y'"
        assert y == x + k and row[0] == tok.bos_id
    assert not torch.equal(zero[:, 1:1 + w], ids[:, -2 * w - 1:-w - 1])  # not the prompt's own query
    iv = Intervention(add_layer=1, add_vector=kept["v"], add_mode="replace", start=w + 1, stop=w + 2)
    logits = model.logits(zero, iv)
    tvp = F.cross_entropy(logits[:, -w - 1:-1].reshape(-1, logits.shape[-1]), zero[:, -w:].reshape(-1))
    assert torch.allclose(total, few + 0.5 * tvp, atol=1e-5)
    assert float((total - few).detach()) > 0
    total.backward()  # gradients reach the layers before tvp_layer through the kept vector
    assert net.blocks[0].attn.W_Q.grad is not None and float(net.blocks[0].attn.W_Q.grad.abs().sum()) > 0
    with pytest.raises(IclabError, match="tvp_layer"):
        AddKTask(AddKConfig(tvp_layer=5)).model_loss(net, net, AddKTask(AddKConfig(tvp_layer=5)).batch(0, 2, "train"))


def test_the_number_functions_give_their_known_values_and_the_range_holds_them_all():
    x = torch.tensor([[7, 12, 45, 90, 100]])
    assert F.reverse_digits(x).tolist() == [[7, 21, 54, 9, 1]]
    assert F.digit_sum(x).tolist() == [[7, 3, 9, 9, 1]]
    p = torch.tensor([[40]])
    assert F.FUNCTIONS["max"].fn(x, p).tolist() == [[40, 40, 45, 90, 100]]
    assert F.FUNCTIONS["dist"].fn(x, p).tolist() == [[33, 28, 5, 50, 60]]
    assert F.FUNCTIONS["gt"].fn(x, p).tolist() == [[0, 0, 1, 1, 1]]
    assert F.FUNCTIONS["mod"].fn(x, torch.tensor([[7]])).tolist() == [[0, 5, 3, 6, 2]]
    cfg = AddKConfig(mix_ops=("sub", "mul", "div"))
    lo, hi = cfg.number_range()
    assert (lo, hi) == (1 - cfg.k_max, cfg.x_max * cfg.k_max)  # x - 30 at x = 1, x * 30 at x = 100
    with pytest.raises(IclabError, match="mix_ops"):
        AddKConfig(mix_ops=("mod", "nope"))
    with pytest.raises(IclabError, match="op_share"):
        AddKConfig(op_share=0.5)  # a share of add among nothing else


def _parameter_fits(name, cfg, xs, ys):
    """Whether some parameter of function ``name`` (or none) gives every label ys from xs (lists of ints)."""
    f = F.FUNCTIONS[name]
    lo, hi = (1, cfg.k_max) if name in F.TASK_OPS else f.params(cfg.x_min, cfg.x_max, cfg.k_max) if f.params else (0, 0)
    x = torch.tensor(xs)
    return any(f.fn(x, torch.tensor(p)).tolist() == ys for p in range(lo, hi + 1))


def test_a_mix_of_many_functions_writes_each_prompt_in_one_function_with_one_parameter():
    mix = ("sub", "mod", "div", "max", "min", "dist", "gt", "copy", "reverse", "digitsum")
    cfg = AddKConfig(shots=4, label_noise=0.2, mix_ops=mix, op_share=0.5)
    task = AddKTask(cfg)
    b = task.batch(0, 400, "train")
    tok, fn = task.tok, b.extras["function"]
    assert 0.4 < float((fn == 0).float().mean()) < 0.6  # add at its share ...
    assert set(fn.tolist()) == set(range(1 + len(mix)))  # ... every other function present
    x, y, label = b.inputs[:, 1::4] - 3 + tok.lo, b.inputs[:, 3::4] - 3 + tok.lo, b.extras["label"][:, 3::4]
    wrong_fits = 0
    for i in range(len(fn)):
        name = (cfg.op, *mix)[int(fn[i])]
        keep = label[i].nonzero().squeeze(1).tolist()  # the trusted labels, the query's among them
        assert _parameter_fits(name, cfg, [int(x[i, j]) for j in keep], [int(y[i, j]) for j in keep]), (name, i)
        wrong_fits += int(_parameter_fits(name, cfg, x[i].tolist(), y[i].tolist())) if len(keep) < x.shape[1] else 0
    assert wrong_fits < 0.5 * int((~label).any(1).sum())  # a wrong label is mostly not the prompt's function
    assert int(b.inputs.max()) < cfg.model_io()["d_vocab"] and int(b.inputs.min()) >= 0


def test_varied_separators_write_each_training_prompt_in_one_pair_and_evaluation_in_the_arrow_format():
    cfg = AddKConfig(shots=3, separators=4)
    task = AddKTask(cfg)
    tok = task.tok
    assert tok.vocab_size == cfg.tokenizer().vocab_size == NumberTokenizer(*cfg.number_range()).vocab_size + 6
    b = task.batch(0, 200, "train")
    arrows, seps = b.inputs[:, 2::4], b.inputs[:, 4::4]
    pairs = [tuple(p) for p in tok.pair_ids]
    assert all(len(set(a.tolist())) == 1 and (int(a[0]), int(s[0])) in pairs and len(set(s.tolist())) == 1
               for a, s in zip(arrows, seps))
    assert len({int(a[0]) for a in arrows}) == 4  # every pair used
    assert tok.decode(tok.encode("3=5,7:9;12->", bos=False)) == "3=5,7:9;12->"
    with pytest.raises(IclabError, match="cannot tokenize"):
        NumberTokenizer(-30, 130).encode("3=5")  # a tokenizer with one pair knows no other
    mcfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, **cfg.model_io())
    model = IclabHeadModel(Transformer(mcfg, torch.Generator().manual_seed(0)), tok)
    p = A.make_prompts(model, cfg, [3], 2, 3, torch.Generator().manual_seed(0))[0]
    assert tok.arrow_id in p.ids and not set(p.ids) & {i for pair in pairs[1:] for i in pair}


def test_digit_tokens_know_the_other_separator_pairs_too():
    tok = DigitTokenizer(-30, 130, separators=3)
    assert tok.vocab_size == 15 + 4
    ids = tok.encode("7=-23,5:6;")
    assert len(ids) == 1 + 4 * 4 + 4 and tok.decode(ids[1:]) == "7=-23,5:6;"
