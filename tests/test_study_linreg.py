"""The linreg study end to end at a tiny size: models, SPD/ILWD, noise table, probes, summary."""

import json

import pytest
import torch

from iclab.studies import linreg

TINY = ["seeds=1", 
    "d=3", "n_points=8", "depths=[1,2]", "steps=[40,40]", "noise_grid=[[0,1],[0.5,1]]", "noise_training.round_steps=20", "noise_training.max_steps=40",
    "eval_prompts=64", "ilwd_prompts=8", "recipe.d_model=16", "recipe.n_heads=2", "recipe.batch_size=16",
    "probing.d=2", "probing.n_points=6", "probing.n_layers=2", "probing.steps=40", "probing.control_steps=20",
    "probing.prefixes=[2,4]", "probing.n_train=128", "probing.n_test=64", "probing.probe_steps=20", "probing.hidden=32",
    "llc.snapshots=3", "llc.samples=64", "llc.prompts=32", "llc.sampler.draws=20", "llc.sampler.burnin=5",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("linreg")
    log = []
    return out, linreg.run("quick", out, TINY, torch.device("cpu"), log=log.append), log


def test_summary_has_the_documented_keys(study):
    out, summary, _ = study
    assert json.loads((out / "summary.json").read_text())["study"] == "linreg"
    assert set(summary.numbers["spd"]) == {"1", "2"} and "ols" in summary.numbers["spd"]["2"] and "knn_3" in summary.numbers["ilwd"]["1"]
    assert set(summary.numbers["closest_learner"]) == {"1", "2"}
    assert set(summary.numbers["mspd_table"]) == {"0.0000", "0.2500"}
    assert set(summary.numbers["best_ridge_lambda"]) == {"0.0000", "0.2500"}
    assert len(summary.numbers["probe_r2"]["model"]["XTy"]) == 3 and len(summary.numbers["probe_r2"]["control"]["w_ols"]) == 3
    assert any("ridge lambda" in line for line in summary.findings)
    assert summary.numbers["construction"]["max_relative_error"] < 1e-7 and set(summary.numbers["construction"]["spd"]) == {"1", "2"}
    assert any(line.startswith("REPRODUCED") and "Theorem 1" in line for line in summary.findings)
    ridge = summary.numbers["construction"]["ridge"]
    assert ridge["max_relative_error"] < 1e-7 and ridge["lam"] in (0.01, 0.1, 1.0) and ridge["n_layers"] == 5 * 7 + 2
    assert any(line.startswith("REPRODUCED") and "Theorem 2" in line for line in summary.findings)
    assert len(summary.numbers["probe_r2"]["model"]["inv_gram"]) == 3
    mlp_vs_linear = next(line for line in summary.findings if "MLP probes beat linear" in line)
    assert mlp_vs_linear.startswith(("REPRODUCED", "NOT REPRODUCED")) and "standard error over 64 held-out prompts" in mlp_vs_linear
    for rel in summary.figures:
        assert (out / rel).stat().st_size > 5000
    llc = next(line for line in summary.findings if "LLC along training" in line)  # the deepest model's snapshots
    assert llc.startswith("MEASURED") and "step 0:" in llc and "step 40:" in llc and "prior_mean" not in llc.split("(")[0]
    assert any(f.endswith("llc_and_closest_learner.png") for f in map(str, summary.figures))


def test_models_are_ordinary_resumable_runs_and_a_rerun_reuses_everything(study):
    out, _, _ = study
    for name in ("L1", "L2", "L_noise_s0.5_t1", "probe", "control"):
        assert json.loads((out / "runs" / name / "summary.json").read_text())["status"] == "complete"
    noisy = json.loads((out / "runs" / "L_noise_s0.5_t1" / "summary.json").read_text())
    assert noisy["steps"] in (20, 40)  # fine-tuned in rounds of 20 until within the Bayes margin, at most 40
    log = []
    again = linreg.run("quick", out, TINY, torch.device("cpu"), log=log.append)
    trained = json.loads((out / "runs" / "L1" / "summary.json").read_text())["wall_time_s"]
    assert again.timings_s["train L1"] == round(trained, 2) > 0  # the training a re-run reuses still counts in its timings
    assert "  behaviour: cached" in log and "  probes: cached" in log
    log = []  # a threshold decides verdicts only: the claims are re-judged, no part is recomputed
    summary = linreg.run("quick", out, [*TINY, "thresholds.construction_tol=1e-30"], torch.device("cpu"), log=log.append)
    assert all(line.endswith(": cached") for line in log if line.startswith("  ") and line.strip().endswith(("...", "cached")))
    assert "  construction: cached" in log
    assert any(line.startswith("NOT REPRODUCED") and "Theorem 1" in line for line in summary.findings)


def test_a_moved_study_folder_resumes_with_everything_cached(study, tmp_path):
    import shutil

    out, _, _ = study
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    config = (moved / "runs" / "L_noise_s0.5_t1" / "config.yaml").read_text()
    assert "init_weights: ../L2/model.safetensors" in config  # the noise run starts from its sibling, by a relative path
    log = []
    linreg.run("quick", moved, TINY, torch.device("cpu"), log=log.append)
    assert "  behaviour: cached" in log and "  construction: cached" in log


def test_the_control_sees_one_task_only():
    from iclab.tasks import LinearRegression, LinRegConfig

    batch = LinearRegression(LinRegConfig(d=3, n_points=4, fixed_w=True)).batch(0, 5, "train")
    assert torch.equal(batch.extras["ws"], torch.ones(5, 3))


@pytest.mark.parametrize("setting, message", [("thresholds.probe_z=-1", "thresholds.probe_z: must be positive"),
                                              ("thresholds.share_of_n=1.5", r"thresholds.share_of_n: must be a share in \(0, 1\]")])
def test_bad_thresholds_are_refused_before_the_folder_is_made(tmp_path, setting, message):
    from iclab.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        linreg.run("quick", tmp_path / "out", [setting], torch.device("cpu"))
    assert not (tmp_path / "out").exists()
