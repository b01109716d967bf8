"""The linreg study's claims, table-driven on hand-built typed results: for each claim with a verdict, a case where it
holds and one where it does not."""

import pytest
from claim_cases import holds_and_fails

from iclab.analysis.linreg.comparison import Behaviour, Constructions, ModelComparison, NoiseTable, RidgeConstruction
from iclab.analysis.linreg.metrics import CurveCI
from iclab.analysis.linreg.probes import ProbeComparison, ProbeFit, ProbeTable
from iclab.studies.linreg.claims import findings
from iclab.studies.linreg.settings import PRESETS

CFG = PRESETS["quick"]  # d = 4, n = 9, depths 1, 2, 4, the paper's five noise ratios
LEARNERS = ("ols", "ridge_0.01", "ridge_0.1", "ridge_1", "gd_1step", "sgd", "knn_3", "averaging", "gd_1step_best", "sgd_best")


def curve(value: float) -> CurveCI:
    return CurveCI([1.0] + [value] * CFG.n_points, [0.0] * (CFG.n_points + 1), [2.0] * (CFG.n_points + 1))


def comparison(closest: str, ols_spd: float = 0.005) -> ModelComparison:
    spd = {name: curve(0.5) for name in LEARNERS}
    spd[closest] = curve(0.001)
    if closest != "ols":
        spd["ols"] = curve(ols_spd if closest in ("ridge_0.01",) else 0.3)
    else:
        spd["ols"] = curve(ols_spd)
    return ModelComparison([0.1] * (CFG.n_points + 1), spd, spd, spd, {"gd_1step": 0.05, "sgd": 0.1})


def results(trend=("gd_1step", "ridge_0.1", "ols"), ols_spd=0.005, best_lambdas=None, probe_best=0.8, construction_error=1e-9,
            mlp_gain=(0.1, 0.01)):
    behaviour = Behaviour({}, {d: comparison(c, ols_spd) for d, c in zip(CFG.depths, trend)}, {"gd_1step_best": 0.1, "sgd_best": 0.2},
                          32, {"origin": {1: 0.5}, "intercept": {1: 0.4}})
    ratios = [f"{r:.4f}" for r in sorted(CFG.noise_ratios)]
    best = best_lambdas or {r: float(r) for r in ratios}
    table = {r: {c: 1.0 for c in ratios} for r in ratios}
    noise = NoiseTable(table, best, {r: 0.03 for r in ratios if float(r) > 0}, {})

    def probes(best_r2: float) -> ProbeTable:
        fit = ProbeFit({"linear": [0.1, 0.5, 0.6], "mlp": [0.1, best_r2, best_r2]}, mlp_gain)
        return ProbeTable({t: {n: fit for n in CFG.probing.prefixes} for t in ("XTy", "w_ols", "inv_gram")})

    control = ProbeTable({t: {n: ProbeFit({"linear": [0.1] * 3, "mlp": [0.1, 0.2, 0.2]}, (0.0, 0.01)) for n in CFG.probing.prefixes}
                          for t in ("XTy", "w_ols", "inv_gram")})
    ridge = RidgeConstruction(0.1, 42, 53, 4, 3, construction_error, {d: 0.1 for d in CFG.depths})
    return {"behaviour": behaviour, "noise": noise, "probes": ProbeComparison(probes(probe_best), control),
            "construction": Constructions(0.05, 512, 2, 25, 8, construction_error, {d: 0.1 for d in CFG.depths}, ridge)}


RATIOS = [f"{r:.4f}" for r in sorted(CFG.noise_ratios)]
CASES = [  # (claim, results where it holds, results where it does not)
    ("the deepest model (4 layers) behaves like OLS", {}, {"trend": ("gd_1step", "ridge_0.1", "ridge_0.1")}),
    ("the deepest model (4 layers) behaves like OLS", {}, {"ols_spd": 0.2}),  # SPD to OLS at n = 2d above 0.05
    ("normalised SPD to OLS is tiny", {"ols_spd": 0.005}, {"ols_spd": 0.02}),
    ("the closest learner moves with depth", {}, {"trend": ("ridge_0.1", "gd_1step", "ols")}),
    ("the closest learner moves with depth", {}, {"trend": ("gd_1step", "gd_1step", "ols")}),  # no ridge-like middle
    ("the best-matching ridge lambda grows with the noise ratio", {},
     {"best_lambdas": {r: float(RATIOS[0]) for r in RATIOS}}),  # flat: does not grow
    ("the best-matching ridge lambda grows with the noise ratio", {},
     {"best_lambdas": {**{r: float(r) for r in RATIOS}, RATIOS[1]: float(RATIOS[-1])}}),  # three steps off the diagonal
    ("probes find X^T y and w_OLS better with depth", {}, {"probe_best": 0.15}),
    ("a transformer implements one step of gradient descent", {}, {"construction_error": 1e-3}),
    ("a transformer implements ridge regression by Sherman-Morrison", {}, {"construction_error": 1e-3}),
    ("MLP probes beat linear ones", {}, {"mlp_gain": (0.01, 0.02)}),
]


@pytest.mark.parametrize("claim, holds, fails", CASES)
def test_each_claim_holds_on_one_case_and_not_on_the_other(claim, holds, fails):
    holds_and_fails(findings, CFG, results, claim, holds, fails)


def test_summary_numbers_are_keyed_by_depth_and_noise_ratio():
    _, numbers = findings(CFG, results())
    assert set(numbers["spd"]) == set(CFG.depths) and set(numbers["best_ridge_lambda"]) == set(RATIOS)
