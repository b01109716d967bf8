"""Head analyses on a model placed by accelerate's device map, with blocks offloaded to disk (meta tensors outside a
pass): every number equals the same model's loaded whole, and the offloaded weights are meta again afterwards."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from test_heads_hf import FAMILIES, ids, tiny  # noqa: E402

from iclab.analysis.induction.scores import score_heads  # noqa: E402
from iclab.analysis.lens import direct_logit_attribution, logit_lens  # noqa: E402
from iclab.analysis.patching import PromptPair, patch, path_patch  # noqa: E402
from iclab.heads import HFHeadModel, Intervention, greedy_generate, load_hf  # noqa: E402
from iclab.heads.placement import WEIGHTS_SHARE_OF_FREE, dispatched, spread_placement, spread_room  # noqa: E402


def offloaded(hf, folder) -> HFHeadModel:
    """``hf`` saved to ``folder`` and loaded back with its embedding, first layer and final norm in CPU memory, the rest
    (the second layer, an untied unembedding) read from disk during each pass."""
    hf.save_pretrained(folder)
    layers_path = HFHeadModel(hf).family.layers  # e.g. "model.layers"
    backbone, layers_name = layers_path.rsplit(".", 1)
    placement = {f"{backbone}.{name}": "cpu" for name, _ in getattr(hf, backbone).named_children() if name != layers_name}
    placement.update({f"{layers_path}.0": "cpu", f"{layers_path}.1": "disk"})
    tied = hf.get_output_embeddings().weight is hf.get_input_embeddings().weight  # a tied unembedding is the embedding's
    placement.update({name: "cpu" if tied else "disk" for name, _ in hf.named_children() if name != backbone})
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, device_map=placement, dtype=torch.float32)
    return HFHeadModel(model)


def meta_weights(model: HFHeadModel) -> int:
    return sum(p.device.type == "meta" for p in model.model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_and_passes_of_an_offloaded_model_equal_the_whole_models(family, tmp_path):
    hf = tiny(family)
    whole, placed = HFHeadModel(hf), offloaded(hf, tmp_path / family)
    assert placed._dispatched and not whole._dispatched
    meta = meta_weights(placed)
    proj = placed._proj(1).weight
    assert meta > 0 and proj.device.type == "meta"  # planted: the second layer really lives on disk
    x = ids()
    assert torch.equal(whole.logits(x), placed.logits(x))
    with whole.capture_z() as a, placed.capture_z() as b:
        whole.logits(x), placed.logits(x)
    assert torch.equal(whole.head_results(a.z), placed.head_results(b.z))
    assert torch.equal(whole.W_O(1), placed.W_O(1)) and torch.equal(whole.b_O(1), placed.b_O(1))
    assert torch.equal(whole.ov_logits(1, x[0]), placed.ov_logits(1, x[0]))
    for p, q in zip(whole.ov_core(1), placed.ov_core(1)):
        assert torch.equal(p, q)
    if family not in ("qwen3", "olmo2", "gemma3_text"):  # queries and keys normalised: no linear QK circuit
        for p, q in zip(whole.circuit_weights(1), placed.circuit_weights(1)):
            assert torch.equal(p, q)
    assert torch.equal(whole.patterns(x), placed.patterns(x))
    pinned = whole.patterns(x).flip(-1).tril()  # any fixed pattern will do: it must replace the heads' own
    with whole.frozen_patterns(pinned):
        expected = whole.logits(x)
    with placed.frozen_patterns(pinned):
        frozen = placed.logits(x)
    assert torch.equal(expected, frozen) and not torch.equal(frozen, placed.logits(x))
    assert torch.equal(whole.values(x), placed.values(x))
    resid = torch.randn(3, 32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(whole.resid_logits(resid), placed.resid_logits(resid))
    w, r = whole.head_writes(1, a.z[1, :, -1]), placed.head_writes(1, b.z[1, :, -1])
    assert torch.equal(w[0], r[0]) and torch.equal(w[1], r[1])
    scale = torch.ones(2, 4)
    scale[1, 0] = scale[1, 2] = 0.0
    ablate = Intervention(head_scale=scale)
    assert torch.equal(whole.logits(x, ablate), placed.logits(x, ablate))
    assert not torch.equal(placed.logits(x), placed.logits(x, ablate))  # the ablation does act on the placed model
    with whole.recording_resid(1) as kept_w, placed.recording_resid(1) as kept_p:
        whole.logits(x), placed.logits(x)
    assert torch.equal(kept_w[0], kept_p[0])
    with placed.resumed_at(1, kept_p[0]):
        resumed = placed.logits(x, ablate)
    assert torch.equal(resumed, whole.logits(x, ablate))
    assert torch.equal(placed.logits(x), whole.logits(x))  # accelerate's own forward is back after the resumed pass
    assert meta_weights(placed) == meta and placed._proj(1).weight.device.type == "meta"  # offloaded again


def test_every_head_analysis_runs_on_a_model_placed_by_load_hf(hf_folder):
    whole = load_hf(hf_folder)
    placed = load_hf(hf_folder, device_map="auto", max_memory={"cpu": 40_000})
    assert dispatched(placed.model) and meta_weights(placed) > 0
    meta = meta_weights(placed)
    a = score_heads(whole, torch.Generator().manual_seed(0), length=6, repeats=2, batch=4, n_ov_tokens=20)
    b = score_heads(placed, torch.Generator().manual_seed(0), length=6, repeats=2, batch=4, n_ov_tokens=20)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, equal_nan=True), key
    pair = PromptPair([0, 5, 6, 7, 8, 9, 5, 6], [0, 5, 10, 7, 8, 9, 5, 6], answer=7, wrong=11)  # an induction pair
    for site in ("heads", "resid", "k"):
        p, q = patch(whole, [pair], site, "logprob"), patch(placed, [pair], site, "logprob")
        assert torch.allclose(torch.as_tensor(p.effect), torch.as_tensor(q.effect), atol=1e-6, equal_nan=True), site
    p, q = path_patch(whole, [pair], (2, 1), "k"), path_patch(placed, [pair], (2, 1), "k")
    assert torch.allclose(torch.as_tensor(p.effect), torch.as_tensor(q.effect), atol=1e-6, equal_nan=True)
    answer = pair.answer
    p, q = direct_logit_attribution(whole, torch.tensor(pair.clean), answer), direct_logit_attribution(placed, torch.tensor(pair.clean), answer)
    assert abs(p.total - q.total) < 1e-5 and abs(p.heads - q.heads).max() < 1e-5
    p, q = logit_lens(whole, torch.tensor(pair.clean), answer), logit_lens(placed, torch.tensor(pair.clean), answer)
    assert abs(p.logprob - q.logprob).max() < 1e-5
    prompt = torch.tensor([pair.clean])
    grads = []
    for model in (whole, placed):  # gradients through offloaded layers (the addk mask's and function vectors' fits)
        vec = torch.zeros(model.d_model, requires_grad=True)
        model.logits_grad(prompt, Intervention(add_layer=1, add_vector=vec))[0, -1, answer].backward()
        grads.append(vec.grad)
    assert grads[0].abs().max() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)
    assert torch.equal(greedy_generate(whole, prompt, 4), greedy_generate(placed, prompt, 4))
    assert meta_weights(placed) == meta


def test_a_model_spreads_over_the_gpus_only_when_it_does_not_fit_the_current_one():
    GiB = 2**30
    assert spread_placement(10 * GiB, {0: 40 * GiB, 1: 40 * GiB}, 100 * GiB) is None
    spread = spread_placement(60 * GiB, {0: 40 * GiB, 1: 40 * GiB}, 100 * GiB)
    assert spread["device_map"] == "auto"
    assert spread["max_memory"] == {0: int(WEIGHTS_SHARE_OF_FREE * 40 * GiB), 1: int(WEIGHTS_SHARE_OF_FREE * 40 * GiB),
                                    "cpu": int(WEIGHTS_SHARE_OF_FREE * 100 * GiB)}
    assert spread_placement(35 * GiB, {0: 40 * GiB}, 8 * GiB) is not None  # above the share left for activations
    assert spread_placement(10 * GiB, {0: 5 * GiB, 1: 40 * GiB}, 0, current=1) is None
    assert spread_room(torch.device("cpu")) is None  # a CPU model must fit the CPU alone (the memory checks' default)


def test_max_memory_on_the_command_line_gives_the_same_scores_and_bad_sizes_are_one_line(hf_folder, tmp_path):
    import json
    import subprocess
    import sys

    def iclab(*args):
        return subprocess.run([sys.executable, "-m", "iclab.cli", *args], capture_output=True, text=True)

    whole = iclab("heads", str(hf_folder), "--device", "cpu", "--json", "--top", "12")
    placed = iclab("heads", str(hf_folder), "--device", "cpu", "--json", "--top", "12", "--max-memory", "40KB")
    assert whole.returncode == 0 and placed.returncode == 0, placed.stderr
    assert json.loads(placed.stdout) == json.loads(whole.stdout)
    bad = iclab("heads", str(hf_folder), "--device", "cpu", "--max-memory", "lots")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "--max-memory 'lots' is not a size" in bad.stderr and "2GiB" in bad.stderr


def test_the_spread_is_sized_from_the_folders_weights_and_each_devices_free_memory(hf_folder, monkeypatch):
    import iclab.footprint as footprint
    from iclab.heads.placement import spread_over_gpus

    weights = footprint.count_parameters(hf_folder) * 4  # float32 bytes
    free = {"cuda:0": weights // 2, "cuda:1": 10 * weights, "cpu": 100 * weights}  # GPU 0 too small for the weights
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(footprint, "available", lambda device: free[str(device)])
    spread = spread_over_gpus(hf_folder, torch.float32)
    assert spread["device_map"] == "auto" and set(spread["max_memory"]) == {0, 1, "cpu"}
    assert spread["max_memory"][1] == int(WEIGHTS_SHARE_OF_FREE * 10 * weights)
    free["cuda:0"] = 2 * weights  # now it fits the current GPU: loaded whole there
    assert spread_over_gpus(hf_folder, torch.float32) is None
    assert spread_over_gpus(hf_folder, torch.bfloat16) is None


def test_a_pretrained_study_with_max_memory_runs_on_the_placed_model_with_the_same_findings(hf_folder, tmp_path, monkeypatch):
    """`iclab run induction --model M --max-memory SIZE`: the study loads M placed (checked on the model it got) and
    every claim and number equals the study on M loaded whole; --max-memory without --model, or with a bad size, is
    one line before anything runs."""
    import json

    import iclab.heads as heads
    from iclab.studies import study
    from test_robustness import iclab, one_line_error

    loaded = []
    real = heads.load_hf
    monkeypatch.setattr(heads, "load_hf", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    small = ["seeds=1", "pretrained.probe_length=6", "pretrained.probe_batch=2", "pretrained.text_sequences=2", "pretrained.text_length=24",
             "pretrained.top_k=2", "pretrained.random_draws=2", "pretrained.batch=2", f"model={hf_folder}"]
    induction = study("induction")
    settings = induction.settings("quick", small)
    runs = {}
    for name, limit in (("whole", None), ("placed", "40KB")):
        induction.run_settings(settings, tmp_path / name, torch.device("cpu"), log=lambda s: None, max_memory=limit)
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert [m._dispatched for m in loaded] == [False, True]  # planted: the second run's model really is placed
    assert runs["whole"]["claims"] and runs["whole"]["numbers"]
    assert runs["placed"]["claims"] == runs["whole"]["claims"] and runs["placed"]["numbers"] == runs["whole"]["numbers"]
    one_line_error(iclab("run", "linreg", "--max-memory", "1GB", "--out", str(tmp_path / "lr")),
                   "--max-memory places a pretrained model (--model)")
    one_line_error(iclab("run", "induction", "--model", str(hf_folder), "--max-memory", "lots", "--out", str(tmp_path / "x")),
                   "is not a size")
    assert not (tmp_path / "lr").exists() and not (tmp_path / "x").exists()
