"""Sweeps: grid expansion, hash-named runs, failures isolated, finished runs skipped; local pool and real Ray."""

import pandas as pd
import pytest

from conftest import TINY_SPINGLASS
from iclab.claims import Verdict
from iclab.errors import IclabError
from iclab.sweep import expand, parse_grid, plot_sweep, run_directory, sweep


def test_grid_values_are_yaml_and_commas_inside_brackets_are_kept():
    grid = parse_grid(["depths=[1,2],[4]", "recipe.lr=1e-3,3e-4"])
    assert grid == {"depths": [[1, 2], [4]], "recipe.lr": ["1e-3", "3e-4"]}
    points = expand(["a=1,2", "b=x,y"], seeds=2)
    assert len(points) == 8 and points[0].values == {"a": 1, "b": "x", "seed": 0}
    with pytest.raises(IclabError, match="expected key=v1,v2"):
        parse_grid(["nonsense"])


@pytest.mark.parametrize("grids, message", [
    (["=1,2"], "no key before '='"),
    (["figS7.N=1,2", "figS7.N=3"], "figS7.N: given twice"),
    (["figS7.D=[1,2"], "a value is not valid YAML"),
    (["nosuch.key=1,2"], "nosuch: unknown key"),
    (["figS7.N=abc,xyz"], "figS7.N"),
])
def test_a_bad_grid_is_refused_before_anything_runs(tmp_path, grids, message):
    with pytest.raises(IclabError, match=message):
        sweep("spinglass", "quick", grids, tmp_path / "sw", base=TINY_SPINGLASS, log=lambda s: None)
    assert not (tmp_path / "sw").exists()


GRID = ["figS7.N=10,20", "figS7.D=[3],[4]"]


def _sweep(tmp_path, **kw):
    # the D=[4] points fail at run time: their folders already hold something that is not their study
    for point in expand(GRID, 0, TINY_SPINGLASS):
        if point.values["figS7.D"] == [4]:
            folder = run_directory("spinglass", "quick", point.overrides, tmp_path)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "stray.txt").write_text("not a study")
    return sweep("spinglass", "quick", GRID, tmp_path, base=TINY_SPINGLASS, log=lambda s: None, **kw)


def test_local_pool_sweep_isolates_a_failure_and_skips_finished_runs(tmp_path):
    table = _sweep(tmp_path, workers=2)
    assert sorted(table["status"]) == ["complete", "complete", "failed", "failed"]
    done = table[table.status == "complete"]
    assert set(done["figS7.N"]) == {10, 20} and done["run"].str.startswith("spinglass-").all()
    assert done["result.zero_mode_threshold.3"].tolist() == [12, 12]
    assert (tmp_path / "results.parquet").exists()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "results.parquet"), table, check_dtype=False)
    again = _sweep(tmp_path)
    assert sorted(again["status"]) == ["complete"] * 0 + ["failed", "failed", "skipped (finished)", "skipped (finished)"]
    figure = plot_sweep(tmp_path, "figS7.N", "result.double_descent_peak_alpha")
    assert figure.stat().st_size > 5000


def test_the_results_table_carries_every_claims_measured_values_so_the_swept_effect_shows(tmp_path):
    """The README's sweep over the task dimension: the diversity claim's test errors are columns and differ by D."""
    table = sweep("spinglass", "quick", ["diversity.D=3,6"], tmp_path, base=TINY_SPINGLASS, log=lambda s: None)
    assert list(table["status"]) == ["complete", "complete"]
    errors = table.set_index("diversity.D")["result.claim.test_error_most_tasks"]
    assert errors[3] != errors[6] and errors.notna().all()
    assert {"result.claim.contrast_ratio_most_tasks", "result.verdicts.REPRODUCED", "result.verdicts.NOT_REPRODUCED"} <= set(table.columns)
    assert (table["result.verdicts.REPRODUCED"] + table["result.verdicts.NOT_REPRODUCED"] + table["result.verdicts.MEASURED"]
            + table["result.verdicts.NOT_APPLICABLE"] > 5).all()
    verdicts = table[[c for c in table.columns if c.startswith("result.verdict.")]]  # each claim's own verdict
    assert len(verdicts.columns) >= 5 and verdicts.isin([v.value for v in Verdict]).all().all()
    for name in ("REPRODUCED", "NOT REPRODUCED"):  # as many claims with that verdict as the count says
        assert ((verdicts == name).sum(axis=1) <= table[f"result.verdicts.{name.replace(' ', '_')}"]).all()
    assert ((verdicts == "REPRODUCED").sum(axis=1) + (verdicts == "NOT REPRODUCED").sum(axis=1) > 0).all()
    figure = plot_sweep(tmp_path, "diversity.D")  # default metric: the first claim value
    assert figure.stem.startswith("sweep_result_claim_")
    with pytest.raises(IclabError, match="'status' is not a numeric result"):
        plot_sweep(tmp_path, "diversity.D", "status")


@pytest.mark.slow
def test_ray_sweep_on_a_real_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        table = _sweep(tmp_path, executor="ray")
    finally:
        ray.shutdown()
    assert sorted(table["status"]) == ["complete", "complete", "failed", "failed"]
    assert len(list((tmp_path / "runs").glob("*/summary.json"))) == 2


def test_verdict_flips_name_the_claims_whose_verdict_changes_with_the_seed_and_no_other():
    """Planted: claim a flips between the seeds of D=3 only; claim b holds everywhere (the control); a failed run
    (no verdict columns) and a sweep without seeds add nothing."""
    from iclab.sweep import verdict_flips

    R, N = "REPRODUCED", "NOT REPRODUCED"
    rows = [{"run": f"r{i}", "status": "complete", "diversity.D": d, "seed": s, "result.verdict.a": a, "result.verdict.b": R}
            for i, (d, s, a) in enumerate([(3, 0, R), (3, 1, N), (3, 2, R), (6, 0, N), (6, 1, N)])]
    rows.append({"run": "r9", "status": "failed", "diversity.D": 6, "seed": 2})
    flips = verdict_flips(pd.DataFrame(rows))
    assert [(f.point, f.claim, f.counts) for f in flips] == [({"diversity.D": "3"}, "a", {R: 2, N: 1})]
    assert flips[0].line() == "a (diversity.D=3): 1 NOT REPRODUCED, 2 REPRODUCED"
    seeds_only = pd.DataFrame([{k: v for k, v in r.items() if k != "diversity.D"} for r in rows])
    assert [f.counts for f in verdict_flips(seeds_only)] == [{R: 2, N: 3}]
    assert verdict_flips(pd.DataFrame([{k: v for k, v in r.items() if k != "seed"} for r in rows])) == []
    from iclab.sweep import verdicts_over_seeds, verdicts_table

    over = verdicts_table(verdicts_over_seeds(pd.DataFrame(rows)))  # the one rule, claim by claim and point by point
    assert over[["diversity.D", "claim", "verdict"]].values.tolist() == [
        ["3", "a", "INCONCLUSIVE"], ["3", "b", R], ["6", "a", N], ["6", "b", R]]
    assert over["seeds.REPRODUCED"].fillna(0).tolist() == [2, 3, 0, 2]
    listed = pd.DataFrame([{**r, "diversity.D": [r["diversity.D"]]} for r in rows])  # a list-valued grid key
    assert [f.line() for f in verdict_flips(listed)] == ["a (diversity.D=[3]): 1 NOT REPRODUCED, 2 REPRODUCED"]
