"""The addk study end to end on a tiny Hugging Face model saved to a local folder, and its errors."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from iclab.analysis.addk.pipeline import DemoPatching, Projection, Subspaces
from iclab.results import Head
from iclab.studies import addk  # noqa: E402
from iclab.studies.common import Summary

SMALL = ["seeds=1", "mean_per_task=3", "eval_per_task=3", "mask_per_task=3", "mask_epochs=2", "max_subspace_heads=2", "task.k_max=6",
         "task.held_out=[2]", "task.x_max=20"]


def test_the_whole_pipeline_runs_on_a_local_hugging_face_model(hf_folder, tmp_path):
    # a random model cannot add: the accuracy floor is lifted so that every localisation step runs
    summary = addk.run("quick", tmp_path, [*SMALL, f"model={hf_folder}", "min_clean_accuracy=0"], torch.device("cpu"), log=lambda s: None)
    saved = Summary.load(tmp_path / "summary.json")
    assert saved == summary and saved.study == "addk" and saved.numbers["model"] == str(hf_folder)
    for key in ("clean_accuracy", "heads", "accuracy", "pcs_to_95", "periodic_r2", "label_token_signal_share"):
        assert key in saved.numbers
    assert set(saved.numbers["heads"]) == {"selected", "significant", "main"}
    assert all(0 <= layer < 3 and 0 <= h < 4 for layer, h in map(Head.parse, saved.numbers["heads"]["selected"]))
    sub = Subspaces.from_json(json.loads((tmp_path / "parts" / "subspaces.json").read_text())["result"])
    for head in sub.heads.values():  # the identity is exact algebra on real forward passes (multi-token labels included)
        assert head.identity_relative_error < 1e-3
    assert all((tmp_path / f).is_file() for f in summary.figures)
    assert (tmp_path / "parts" / "task_means.safetensors").is_file()
    proj = Projection.from_json(json.loads((tmp_path / "parts" / "projection.json").read_text())["result"])
    assert set(proj.heads) == set(sub.heads)  # one projection test per analysed head, every arm an accuracy
    for head in proj.heads.values():
        assert set(head.accuracy) == {"whole", *(f"{v}_{s}" for v in ("onto", "out") for s in ("parity", "unit", "magnitude"))}
        assert all(0 <= a <= 1 for a in head.accuracy.values())
    assert any("projection causal test" in line for line in saved.findings)
    demo = DemoPatching.from_json(json.loads((tmp_path / "parts" / "demo_patching.json").read_text())["result"])
    if demo.patching is not None:  # residual-stream patching of the demonstrations, its label positions inside the prompt
        T = demo.patching.effect.shape[1]
        assert demo.patching.effect.shape[0] == 4 and demo.label_positions and max(demo.label_positions) < T - 1
        assert not set(demo.label_positions) & set(demo.other_positions)
    assert any("activation patching of" in line for line in saved.findings)


def test_a_model_that_cannot_do_the_task_gets_not_applicable_claims_and_its_accuracy_by_format(hf_folder, tmp_path):
    summary = addk.run("quick", tmp_path, [*SMALL, f"model={hf_folder}", "scan_shots=[1,2]", "scan_per_task=2"], torch.device("cpu"),
                       log=lambda s: None)
    verdicts = [c.verdict.value for c in summary.claims]
    assert summary.numbers["localised"] is False and "heads" not in summary.numbers
    assert verdicts.count("NOT APPLICABLE") == 5 and all("min_clean_accuracy" in c.thresholds for c in summary.claims
                                                           if c.verdict.value == "NOT APPLICABLE")
    assert set(summary.numbers["clean_scan"]) == {f"{f}/{s}" for f in ("arrow", "qa", "io", "ab", "textlabel", "fx") for s in (1, 2)}
    assert not (tmp_path / "parts" / "localisation.json").exists()
    assert not (tmp_path / "parts" / "task_vectors.json").exists()  # a pretrained model's curve waits for the behaviour
    assert (tmp_path / "figures" / "clean_accuracy_by_format.png").is_file()


def test_a_missing_model_folder_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "iclab.cli", "run", "addk", "--model", str(tmp_path / "nowhere"), "--out",
                             str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "no such folder" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists(), "a refused study leaves no folder"


@pytest.mark.parametrize("bad,field", [("q=2", "q"), ("lam=0", "lam"), ("main_fraction=0", "main_fraction"), ("eval_per_task=0", "eval_per_task"),
                                       ("task.tvp_layer=3", "tvp_layer"), ("tv_per_task=0", "tv_per_task")])
def test_bad_search_settings_are_refused_before_the_folder_is_touched(tmp_path, bad, field):
    from iclab.errors import IclabError

    with pytest.raises(IclabError, match=field):
        addk.run("quick", tmp_path / "out", [bad], torch.device("cpu"), log=lambda s: None)
    assert not (tmp_path / "out").exists()
