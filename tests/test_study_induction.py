"""The induction study end to end at toy scale: every part, figure and summary key; smeared keys beat plain 1-layer."""

import json

import pytest
import torch

from iclab.analysis.induction.runs import Trajectory
from iclab.errors import IclabError
from iclab.analysis.llc_runs import LLCTrajectory
from iclab.results import Head
from iclab.studies import induction
from iclab.studies.common import Summary

TINY = ["seeds=1", "recipe.steps=1200", "recipe.snapshots=12", "models=[attn1,smeared1]", "recipe.natural_share=0", "eval_sequences=64",
        "ablation_sequences=64", "probe_batch=16", "loss_positions=64", "llc.snapshots=3", "llc.samples=128"]


def test_the_study_runs_and_smeared_keys_give_a_one_layer_model_in_context_learning(tmp_path):
    summary = induction.run("quick", tmp_path, TINY, torch.device("cpu"), log=lambda s: None)
    saved = Summary.load(tmp_path / "summary.json")
    assert saved == summary and saved.study == "induction"
    for key in ("icl_score", "phase_change", "induction_heads", "ablation_icl_drop"):
        assert key in saved.numbers
    assert set(saved.numbers["icl_score"]) == {"attn1", "smeared1"}
    # the smeared-key model builds induction heads and uses its context much more than the plain one, which can only
    # learn in-context token frequencies (measured: -3.7 vs -1.3 nats)
    assert saved.numbers["icl_score"]["smeared1"] < saved.numbers["icl_score"]["attn1"] - 1.0
    assert saved.numbers["induction_heads"]["smeared1"] and not saved.numbers["induction_heads"]["attn1"]
    traj = Trajectory.from_json(json.loads((tmp_path / "parts" / "trajectory_smeared1.json").read_text())["result"])
    assert len(traj.step) >= 10 and traj.step[0] == 0
    assert traj.head_scores("prefix_matching").shape == (len(traj.step), 1, 4)
    assert all((tmp_path / f).is_file() for f in summary.figures)
    assert any(c.verdict.value in ("REPRODUCED", "NOT REPRODUCED") for c in saved.claims)
    assert all(line.startswith(c.verdict.value) for line, c in zip(saved.findings, saved.claims))
    curve = LLCTrajectory.from_json(json.loads((tmp_path / "parts" / "llc_attn1.json").read_text())["result"])
    assert len(curve.step) == 3 and all(e.n_weights > 0 and len(e.per_chain) == 2 for e in curve.estimates)
    assert any("attn1's LLC along training" in line for line in saved.findings)


def test_a_mixture_over_one_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(IclabError, match="repeat_share"):
        induction.run("quick", tmp_path / "out", ["recipe.natural_share=0.5"], torch.device("cpu"), log=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_mlp_models_are_attention_and_mlp_blocks_and_bad_names_are_refused():
    cfg = induction.PRESETS["quick"]
    assert "mlp2" in cfg.models
    mlp = induction.run_config(cfg, "mlp2").model
    attn = induction.run_config(cfg, "attn2").model
    assert not mlp.attn_only and attn.attn_only and mlp.n_layers == attn.n_layers == 2
    with pytest.raises(IclabError, match="mlp<L>"):
        induction.run("quick", "/nonexistent/never", ["models=[relu2]"], torch.device("cpu"), log=lambda s: None)


def test_the_pretrained_branch_runs_on_a_local_hugging_face_model_and_resumes_from_its_parts(hf_folder, tmp_path):
    small = ["seeds=1", f"model={hf_folder}", "pretrained.probe_length=6", "pretrained.probe_batch=2", "pretrained.text_sequences=2",
             "pretrained.text_length=24", "pretrained.top_k=2", "pretrained.random_draws=2", "pretrained.batch=2"]
    log: list[str] = []
    summary = induction.run("quick", tmp_path, small, torch.device("cpu"), log=log.append)
    assert summary.study == "induction" and summary.numbers["model"] == str(hf_folder)
    assert len(summary.numbers["induction_heads"]) == 2 and all(0 <= layer < 3 and 0 <= h < 4 for layer, h in map(Head.parse, summary.numbers["induction_heads"]))
    assert set(summary.numbers["ablation"]) == {"zero", "mean"} and {"induction", "random0", "random1"} <= set(summary.numbers["ablation"]["zero"])
    assert all((tmp_path / f).is_file() for f in summary.figures) and not (tmp_path / "runs").exists()
    log.clear()
    again = induction.run("quick", tmp_path, small, torch.device("cpu"), log=log.append)
    assert [c.verdict.value for c in again.claims] == [c.verdict.value for c in summary.claims]
    assert sum("cached" in line for line in log) == 5  # scores, icl, ablations, example, patching
