"""The spinglass study end to end at a tiny size: summary, figures, findings, resumable parts."""


import pytest
import torch

from iclab.errors import ConfigError
from iclab.studies import spinglass
from iclab.studies.common import Summary

from conftest import TINY_SPINGLASS as TINY


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("spinglass")
    log = []
    summary = spinglass.run("quick", out, TINY, torch.device("cpu"), log=log.append)
    return out, summary, log


def test_summary_has_the_documented_keys_and_every_figure(study):
    out, summary, _ = study
    assert Summary.load(out / "summary.json") == summary
    assert summary.study == "spinglass" and summary.preset == "quick"
    assert set(summary.numbers["fig4b"]) == {"10", "30"}
    assert set(summary.numbers["fig4b"]["10"]) == {"exact", "amp", "amp_paper", "gd"}
    assert set(summary.numbers["zero_mode_threshold"]) == {"3", "4"}
    assert len(summary.numbers["contrast_ratio"]["grid"]) == 3
    for rel in summary.figures:
        assert (out / rel).stat().st_size > 5000
        assert (out / rel).with_suffix(".svg").exists()


def test_the_paper_claims_that_hold_at_any_size_are_reproduced(study):
    _, summary, _ = study
    verdict = {c.source + ": " + c.statement: c.verdict.value for c in summary.claims}

    def of(prefix):
        return next(v for k, v in verdict.items() if k.startswith(prefix))

    assert of("Li, Bai, Huang 2024, figure S7") == "REPRODUCED"
    assert summary.numbers["zero_mode_threshold"] == {"3": 12, "4": 20}
    assert of("Li, Bai, Huang 2024, figure 4b") == "REPRODUCED"
    assert of("Li, Bai, Huang 2024, section 4: test error on unseen tasks falls") == "REPRODUCED"
    assert len(summary.findings) == len(summary.claims) and summary.findings[0].startswith(summary.claims[0].verdict.value)


def test_a_rerun_reuses_finished_parts_and_a_changed_setting_recomputes_only_its_part(study):
    out, _, _ = study
    log = []
    spinglass.run("quick", out, TINY, torch.device("cpu"), log=log.append)
    assert all("cached" in line for line in log if line.strip().split(":")[0] in spinglass.PARTS)
    log = []
    spinglass.run("quick", out, TINY + ["figS7.D=[3]"], torch.device("cpu"), log=log.append)
    assert "  figS7 ..." in log and "  fig4b: cached" in log


def test_bad_settings_are_refused_with_the_key_named():
    with pytest.raises(ConfigError, match="fig4b.N: must be positive"):
        spinglass.run("quick", "unused", ["fig4b.N=[0]"], torch.device("cpu"))


def test_the_task_diversity_experiment_trains_a_transformer_per_pool_size(tmp_path):
    diversity = ["task_diversity.d=2", "task_diversity.n_points=5", "task_diversity.pool_sizes=[1,64]", "task_diversity.n_layers=1", "task_diversity.d_model=16",
              "task_diversity.n_heads=2", "task_diversity.steps=30", "task_diversity.batch_size=16", "task_diversity.eval_prompts=64"]
    summary = spinglass.run("quick", tmp_path, TINY + diversity, torch.device("cpu"), log=lambda s: None)
    rows = summary.numbers["task_diversity"]
    assert [r["M"] for r in rows] == [1, 64]
    assert all(r["closer_to"] in ("ridge", "dmmse") for r in rows)
    # with one task in the pool, dMMSE predicts that task: far worse than ridge on fresh tasks
    assert rows[0]["error"]["dmmse"] > rows[0]["error"]["ridge"]
    assert (tmp_path / "figures" / "task_diversity_transformer.png").exists()
