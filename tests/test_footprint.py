"""The memory and time estimate printed before a pretrained model is loaded, and the early one-line refusal."""

import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from iclab import footprint as F  # noqa: E402
from iclab.errors import IclabError  # noqa: E402
from iclab.studies import addk  # noqa: E402

SMALL = ["seeds=1", "mean_per_task=3", "eval_per_task=3", "mask_per_task=3", "mask_epochs=2", "task.k_max=6", "task.held_out=[2]", "task.x_max=20"]


def load_refused(loaded: list) -> None:
    """Stands in for the loader: records the call and stops the study where the weights would be read."""
    loaded.append(1)
    raise RuntimeError("the weights would be read here")


def test_parameters_are_counted_from_the_safetensors_headers_exactly(hf_folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_folder, local_files_only=True)
    assert F.count_parameters(hf_folder) == sum(p.numel() for p in model.parameters())
    shapes = F.Shapes.of(hf_folder)
    assert (shapes.n_layers, shapes.d_model, shapes.n_heads, shapes.n_kv_heads, shapes.d_head) == (3, 32, 4, 2, 8)


def test_the_estimate_scales_with_dtype_batch_and_the_backward_pass(hf_folder):
    fp32 = F.estimate(hf_folder, "float32", 8, 20, backward=False)
    bf16 = F.estimate(hf_folder, "bfloat16", 8, 20, backward=False)
    assert fp32.weights == 4 * fp32.parameters and bf16.weights == 2 * bf16.parameters
    with_grad = F.estimate(hf_folder, "float32", 8, 20, backward=True)
    assert with_grad.activations == 3 * fp32.activations  # every layer's activations kept, not one at a time
    assert F.estimate(hf_folder, "float32", 16, 20, backward=True).activations == 2 * with_grad.activations
    with pytest.raises(IclabError, match="dtype"):
        F.estimate(hf_folder, "int8", 8, 20, backward=False)


def test_a_device_too_small_is_refused_in_one_line_before_the_weights_are_read(hf_folder, tmp_path, monkeypatch):
    fp = F.estimate(hf_folder, "float32", 8, 20, backward=True)
    with pytest.raises(IclabError) as err:
        F.check_fits(fp, torch.device("cpu"), "the test", free=fp.total - 1)
    assert "\n" not in str(err.value) and "needs about" in str(err.value) and "free" in str(err.value)
    F.check_fits(fp, torch.device("cpu"), "the test", free=fp.total)  # exactly enough is enough

    loaded = []
    monkeypatch.setattr(addk, "load_model", lambda *a, **k: load_refused(loaded))
    monkeypatch.setattr(F, "available", lambda device: 1024)
    with pytest.raises(IclabError, match="needs about .* free"):
        addk.run("quick", tmp_path / "small", [*SMALL, f"model={hf_folder}"], torch.device("cpu"), log=lambda s: None)
    assert not loaded and not list((tmp_path / "small").glob("parts/*.json"))

    lines = []
    monkeypatch.setattr(F, "available", lambda device: 2**40)
    with pytest.raises(RuntimeError, match="weights would be read"):  # past the check, the loader is reached
        addk.run("quick", tmp_path / "big", [*SMALL, f"model={hf_folder}"], torch.device("cpu"), log=lines.append)
    assert loaded and any("footprint" in s and "MiB" in s for s in lines) and any("a floor" in s for s in lines)


def test_a_folder_without_safetensors_headers_is_loaded_without_an_estimate(tmp_path, monkeypatch):
    """An iclab run folder (config.yaml, no config.json) or pickled weights: no estimate, and no refusal either."""
    lines = []
    monkeypatch.setattr(addk, "load_model", lambda *a, **k: load_refused(loaded=[]))
    run = tmp_path / "iclab-run"
    run.mkdir()
    (run / "config.yaml").write_text("task: {}\n")
    with pytest.raises(RuntimeError, match="weights would be read"):
        addk.run("quick", tmp_path / "out", [*SMALL, f"model={run}"], torch.device("cpu"), log=lines.append)
    assert any("footprint: not estimated" in s for s in lines)


def test_with_max_memory_the_check_counts_at_most_that_much_of_the_weights(hf_folder, tmp_path, monkeypatch):
    """`iclab run addk --model M --max-memory SIZE`: the rest of the weights is offloaded, so the check before loading
    counts at most SIZE of them on the device (and the loader is asked for that placement)."""
    monkeypatch.setattr(F, "available", lambda device: 2**40)
    calls, lines = [], {}
    monkeypatch.setattr(addk, "load_model", lambda *a, **k: calls.append(k) or load_refused(loaded=[]))
    from iclab.studies import study

    declared = study("addk")
    settings = declared.settings("quick", [*SMALL, f"model={hf_folder}"])
    for limit in (None, "1KB"):
        lines[limit] = []
        with pytest.raises(RuntimeError, match="weights would be read"):
            declared.run_settings(settings, tmp_path / str(limit), torch.device("cpu"), log=lines[limit].append, max_memory=limit)
    whole, placed = ([s for s in lines[k] if "footprint" in s][0] for k in (None, "1KB"))
    mib = [float(re.search(r"weights ([\d.]+) MiB", line).group(1)) for line in (whole, placed)]
    assert mib[0] >= 0.1 and mib[1] == 0.0, (whole, placed)  # 29,920 float32 weights against 1,000 bytes of them
    assert [c.get("max_memory") for c in calls] == [None, "1KB"]
