"""The LLC estimator against closed forms: a regular model's LLC is d/2, a singular one's (w^2 x, quartic loss) 1/4;
seeded runs repeat bit for bit; a step size too large for the loss is caught by the diagnostics."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from iclab.analysis.llc import SGLDSettings, estimate_llc
from iclab.errors import IclabError

N = 2048
TOLERANCE = 0.1  # relative: the known-answer tests' stated tolerance


def regression_data(d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, d, generator=g)
    return x, x @ torch.randn(d, generator=g) + torch.randn(N, generator=g)


def gaussian_nll(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((y - pred) ** 2).mean()  # unit noise variance, constants dropped


def test_a_regular_model_has_llc_d_over_2():
    d = 6
    x, y = regression_data(d)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():  # w*: the least-squares minimum of the empirical loss
        model.weight.copy_(torch.linalg.lstsq(x, y.unsqueeze(1)).solution.T)
    est = estimate_llc(model, lambda m, i: gaussian_nll(m(x[i])[:, 0], y[i]), N,
                       SGLDSettings(step_size=5e-3, localization=0.1, chains=4, burnin=300, draws=2000))
    assert est.llc == pytest.approx(d / 2, rel=TOLERANCE) and est.n_weights == d
    assert est.stderr < 0.1 * est.llc and not est.warnings and est.loss_trace.shape == (4, 2300)


class Squared(nn.Module):
    """f(x) = w^2 x: at the truth w = 0 the loss is quartic in w, a singular model with LLC 1/4."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w ** 2 * x


def singular_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, generator=g)
    noise = torch.randn(N, generator=g)
    noise -= (noise @ x) / (x @ x) * x  # orthogonal to x: the empirical loss is exactly c + w^4 mean(x^2) / 2
    return x, noise


def test_a_singular_model_has_llc_one_quarter_and_the_regular_estimate_would_be_wrong():
    """The quartic well is flat near its minimum, so chains mix slowly: more chains and draws than the regular case
    (seeds 0, 1, 2 gave 0.254, 0.241, 0.256, standard errors about 0.02)."""
    x, y = singular_data()
    model = Squared()
    est = estimate_llc(model, lambda m, i: gaussian_nll(m(x[i]), y[i]), N,
                       SGLDSettings(step_size=3e-3, localization=0.01, chains=8, burnin=500, draws=4000))
    assert est.llc == pytest.approx(0.25, rel=TOLERANCE) and est.n_weights == 1
    assert abs(est.llc - 0.5) > 5 * est.stderr  # d/2 would be 0.5: the estimator tells them apart
    assert float(model.w.detach()) == 0.0  # the model is left as it was


def test_a_seeded_estimate_repeats_bit_for_bit_and_masks_restrict_the_sampled_weights():
    d = 4
    x, y = regression_data(d, seed=2)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y.unsqueeze(1)).solution.T)
    loss = lambda m, i: gaussian_nll(m(x[i])[:, 0], y[i])  # noqa: E731
    s = SGLDSettings(step_size=1e-3, localization=0.1, chains=2, burnin=200, draws=800, seed=3)
    a, b = estimate_llc(model, loss, N, s), estimate_llc(model, loss, N, s)
    assert a.per_chain == b.per_chain and (a.loss_trace == b.loss_trace).all()
    forked = [estimate_llc(model, loss, N, replace(s, workers=2)) for _ in range(2)]  # chains in two processes
    assert forked[0].per_chain == forked[1].per_chain and forked[0].per_chain == pytest.approx(a.per_chain, rel=1e-6)
    half = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    restricted = estimate_llc(model, loss, N, s, masks={"weight": half})
    assert restricted.n_weights == 2 and restricted.llc == pytest.approx(1.0, rel=0.2)  # two of four directions: 2/2


def test_a_step_size_too_large_is_caught_and_bad_settings_are_refused():
    d = 4
    x, y = regression_data(d)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y.unsqueeze(1)).solution.T)
    est = estimate_llc(model, lambda m, i: gaussian_nll(m(x[i])[:, 0], y[i]), N,
                       SGLDSettings(step_size=0.3, localization=0.1, chains=2, burnin=20, draws=50))
    assert any("diverged" in w for w in est.warnings)
    with pytest.raises(IclabError, match="step_size"):
        SGLDSettings(step_size=0)
    with pytest.raises(IclabError, match="fewer than batch_size"):
        estimate_llc(model, lambda m, i: m(x[i]).sum(), 10)
    with pytest.raises(IclabError, match="no parameter named bias"):
        estimate_llc(model, lambda m, i: m(x[i]).sum(), N, masks={"bias": None})
    assert math.isfinite(SGLDSettings().inverse_temperature)


def test_iclab_llc_estimates_every_snapshot_of_a_run_with_refined_head_llcs(tmp_path):
    import json

    from test_robustness import iclab, one_line_error

    run = tmp_path / "ind"
    done = iclab("train", "--task", "induction", "--out", str(run), "--set", "model.n_layers=2", "--set", "model.d_model=16",
                 "--set", "model.n_heads=2", "--set", "model.attn_only=true", "--set", "task.n_ctx=32", "--set", "task.span_max=8",
                 "--set", "train.steps=30",
                 "--set", "train.snapshots=4", "--set", "train.eval_every=10")
    assert done.returncode == 0, done.stderr
    result = iclab("llc", str(run), "--snapshots", "2", "--heads", "--chains", "2", "--draws", "20", "--burnin", "5",
                   "--samples", "128", "--batch-size", "16")
    assert result.returncode == 0, result.stderr
    record = json.loads((run / "llc" / "llc.json").read_text())
    assert len(record["step"]) == 2 and len(record["estimates"]) == 2 and set(record["heads"]) == {"L0H0", "L0H1", "L1H0", "L1H1"}
    head = record["heads"]["L1H0"][0]
    assert head["n_weights"] == 4 * 16 * 8 + 3 * 8  # W_Q, W_K, W_V [D, E], W_O [E, D] and three biases [E] of one head
    assert (run / "llc" / "figures" / "llc.png").is_file() and (run / "llc" / "llc.csv").read_text().startswith("step,tokens,llc")
    one_line_error(iclab("llc", str(tmp_path / "nothing")), "is not an iclab training run")
    one_line_error(iclab("llc", str(run), "--chains", "0"), "chains")


def test_stage_boundaries_are_critical_points_larger_than_the_noise():
    from iclab.analysis.llc import stage_boundaries

    tokens = [10.0 ** k for k in range(7)]
    peak = [1.0, 2.0, 4.0, 9.0, 6.0, 5.5, 5.4]  # rises to a peak at index 3, then falls: one boundary
    [b] = stage_boundaries(tokens, peak, [0.2] * 7)
    assert (b.index, b.tokens, b.kind) == (3, 1000.0, "max")
    assert stage_boundaries(tokens, [1.0, 2.0, 3.0, 3.5, 4.5, 5.0, 6.0], [0.2] * 7) == []  # monotone: none
    assert stage_boundaries(tokens, peak, [3.0] * 7) == []  # the same peak within the chains' noise: none
    wiggle = [1.0, 1.3, 1.1, 1.4, 1.2, 1.5, 1.3]
    assert stage_boundaries(tokens, wiggle, [0.2] * 7) == []  # sign changes smaller than the noise


def _curve(llcs: list[float], tokens: list[float], heads: dict[str, list[float]] | None = None, err: float = 0.1):
    import numpy as np

    from iclab.analysis.llc import LLCEstimate
    from iclab.analysis.llc_runs import LLCTrajectory

    def est(v: float) -> LLCEstimate:
        return LLCEstimate(v, err, [v, v], 3.0, 10.0, 100, np.zeros((2, 3)), 1.0, [])

    steps = list(range(len(tokens)))
    return LLCTrajectory("run", SGLDSettings(), 64, steps, [int(t) for t in tokens], [est(v) for v in llcs],
                         {h: [est(v) for v in vs] for h, vs in (heads or {}).items()}, [float("nan")] * len(tokens),
                         [float("nan")] * len(tokens), None, [float("nan")] * len(tokens))


def _llc_results(attn2: list[float], attn1: list[float], ind_rise: float, other_rise: float, window: bool = True) -> dict:
    from iclab.analysis.induction.phase_change import LossPCA, PhaseChange, Window
    from iclab.analysis.induction.scores import InductionHead
    from iclab.results import Head

    tokens = [1e3, 1e4, 1e5, 1e6, 1e7]
    w = Window(5e5, 2e6, 0.9) if window else None
    pc = {m: PhaseChange(w if m == "attn2" else None, None, None, LossPCA([[0, 0]], [0.5, 0.2])) for m in ("attn1", "attn2")}
    heads = {"L1H2": [0.1, 0.1 + ind_rise], "L0H0": [0.3, 0.3 + other_rise], "L1H0": [0.2, 0.2 + other_rise]}
    res = {"phase_change": pc, "heads": {"attn2": [InductionHead(Head(1, 2), 0.9, 0.5, 0.9)], "attn1": []},
           "llc_attn2": _curve(attn2, tokens), "llc_attn1": _curve(attn1, tokens)}
    if window:  # the study estimates the heads only around a window
        res["llc_heads"] = _curve([5.0, 6.0], [4e5, 3e6], heads, err=0.02)
    return res


def test_the_llc_claims_hold_on_a_planted_boundary_and_fail_without_one():
    from dataclasses import replace

    from iclab.claims import Verdict
    from iclab.studies.induction.llc import llc_claims
    from iclab.studies.induction.settings import PRESETS

    cfg = replace(PRESETS["quick"], models=("attn1", "attn2"))
    verdicts = lambda res: {c.statement.split(" ")[0] + ("/heads" if "refined" in c.statement else ""): c.verdict  # noqa: E731
                            for c in llc_claims(cfg, res) if c.verdict is not Verdict.MEASURED}
    holds = verdicts(_llc_results([2.0, 4.0, 5.0, 9.0, 7.0], [2.0, 3.0, 4.0, 5.0, 6.0], ind_rise=1.0, other_rise=0.0))
    assert holds == {"a": Verdict.REPRODUCED, "attn1": Verdict.REPRODUCED, "attn2's/heads": Verdict.REPRODUCED}
    fails = verdicts(_llc_results([2.0, 4.0, 5.0, 6.0, 7.0], [2.0, 3.0, 5.0, 9.0, 6.0], ind_rise=0.01, other_rise=0.5))
    assert fails == {"a": Verdict.NOT_REPRODUCED, "attn1": Verdict.NOT_REPRODUCED, "attn2's/heads": Verdict.NOT_REPRODUCED}
    none = verdicts(_llc_results([2.0, 4.0, 5.0, 9.0, 7.0], [2.0, 3.0, 4.0, 5.0, 6.0], 1.0, 0.0, window=False))
    assert set(none.values()) == {Verdict.NOT_APPLICABLE}


def test_each_snapshot_is_matched_with_its_closest_learner_planted_and_control(tmp_path):
    """A run whose read-out is zeroed at step 0 predicts exactly the prior's mean there; the run's own final weights,
    given as a learner, match the final snapshot exactly and no other (a learner that differs from it: SPD > 0)."""
    from iclab.analysis.linreg.development import development_learners, learner_trajectory
    from iclab.learners import ModelLearner
    from iclab.runs import load_run
    from iclab.tasks import LinearRegression, LinRegConfig
    from iclab.train import train
    from iclab.train.checkpoint import load_tensors, save_tensors
    from iclab.train.config import apply_overrides, default_config
    from iclab.train.rundir import RunDir

    cfg = apply_overrides(default_config("linreg"), ["task.d=2", "task.n_points=6", "model.n_layers=1", "model.d_model=16",
                                                    "train.steps=40", "train.snapshots=3", "task.curriculum=null"])
    path = train(cfg, tmp_path / "run", "cpu", progress=False).run.path
    run = load_run(path)
    steps = RunDir(path).snapshot_steps()
    assert steps[0] == 0 and steps[-1] == 40
    zero = RunDir(path).snapshot_file(0)
    tensors, meta = load_tensors(zero)
    save_tensors(zero, {k: torch.zeros_like(v) if k.startswith("read_out") else v for k, v in tensors.items()}, meta)
    xs, ys, _ = LinearRegression(LinRegConfig(d=2, n_points=6, data_seed=7, task_seed=8)).sample(0, 64, "eval")
    learners = {**development_learners(2), "itself": ModelLearner(run.model, LinearRegression(run.config.task))}
    t = learner_trajectory(path, steps, xs, ys, learners)
    spd = dict(zip(t.learners, t.spd.T))
    assert t.closest()[0] == "prior_mean" and spd["prior_mean"][0] == 0.0
    assert t.closest()[-1] == "itself" and spd["itself"][-1] == 0.0 and spd["itself"][0] > 0
    assert (spd["ols"] > 0).all() and t.spd.shape == (len(steps), len(learners))


def _linreg_results(llcs: list[float], closest: list[str]) -> dict:
    import numpy as np

    from iclab.analysis.linreg.development import LearnerTrajectory

    names = ["prior_mean", "ols", "ridge_0.1", "gd_1step"]
    spd = np.ones((len(closest), len(names)))
    for i, name in enumerate(closest):
        spd[i, names.index(name)] = 0.1
    return {"llc": _curve(llcs, [10.0 ** k for k in range(len(llcs))]),
            "development": LearnerTrajectory("run", list(range(len(closest))), names, spd)}


def test_the_linreg_llc_claims_follow_the_closest_learner_and_the_noise():
    from iclab.claims import Verdict
    from iclab.studies.linreg.llc import llc_claims
    from iclab.studies.linreg.settings import PRESETS

    cfg = PRESETS["quick"]
    verdicts = lambda res: [c.verdict for c in llc_claims(cfg, res) if c.verdict is not Verdict.MEASURED]  # noqa: E731
    path = ["prior_mean", "prior_mean", "gd_1step", "ridge_0.1", "ols", "ols"]
    assert verdicts(_linreg_results([1.0, 2.0, 5.0, 9.0, 7.0, 6.5], path)) == [Verdict.REPRODUCED, Verdict.REPRODUCED]
    # flat into in-context regression (the rise within the noise), then only rising: neither holds
    assert verdicts(_linreg_results([1.0, 2.0, 2.1, 2.2, 3.0, 4.0], path)) == [Verdict.NOT_REPRODUCED, Verdict.NOT_REPRODUCED]
    # never closest to the prior's mean: no stage to compare
    assert verdicts(_linreg_results([1.0, 2.0, 5.0, 9.0, 7.0, 6.5], ["gd_1step"] * 2 + ["ols"] * 4)) == [Verdict.NOT_APPLICABLE]


def test_iclab_llc_runs_on_a_linreg_and_an_addk_run_with_their_eval_loss(tmp_path):
    """`iclab llc` on the other tasks' runs: linreg logs its eval loss as "mse", which the trajectory reads as the loss
    at the steps it was logged (NaN outside them); an add-k run (a token task) logs "loss"."""
    from iclab.analysis.llc_runs import llc_trajectory
    from iclab.train import train
    from iclab.train.config import apply_overrides, default_config

    settings = SGLDSettings(chains=2, burnin=2, draws=10, batch_size=16)
    for task, extra in (("linreg", ["task.d=2", "task.n_points=6", "task.curriculum=null"]),
                        ("addk", ["task.k_max=5", "task.x_max=20", "task.held_out=[2]", "task.shots=2"])):
        cfg = apply_overrides(default_config(task), [*extra, "model.n_layers=1", "model.d_model=16", "train.steps=20",
                                                     "train.snapshots=2", "train.eval_every=10"])
        path = train(cfg, tmp_path / task, "cpu", progress=False).run.path
        t = llc_trajectory(path, settings, 64)
        assert t.step == [0, 20] and all(math.isfinite(e.llc) for e in t.estimates)
        assert math.isnan(t.eval_loss[0]) and math.isfinite(t.eval_loss[1]), (task, t.eval_loss)
