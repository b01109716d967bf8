"""Trained in-context regressors against the reference learners (Akyürek et al. 2023, sections 3-4): SPD, ILWD and
errors per model, the MSPD table across label noise with each model's Bayes excess, and the constructions of
Theorems 1 and 2 against the models. Every function takes learners (anything with ``predict(xs, ys)``; trained
models through :class:`iclab.learners.ModelLearner`) and held-out prompts, and returns a typed result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch

from iclab.analysis.linreg.metrics import (
    CurveCI,
    best_step_size,
    ilwd,
    implicit_weight_stability,
    implicit_weights,
    mspd,
    normalized_error,
    spd,
)
from iclab.constructions import gd_step_model, ridge_model
from iclab.learners import GD, OLS, SGD, Ridge, reference_learners
from iclab.results import Result
from iclab.tasks import LinearRegression, LinRegConfig


class Learner(Protocol):
    def predict(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ModelComparison:
    """One model against every learner: its error per number of examples, SPD and ILWD curves (through the origin and
    with an intercept) to each learner, and the GD / SGD steps that bring those learners closest to it."""

    error: list[float]
    spd: dict[str, CurveCI]
    ilwd: dict[str, CurveCI]
    ilwd_intercept: dict[str, CurveCI]
    step_sizes: dict[str, float]


@dataclass(frozen=True)
class Behaviour(Result):
    """Every model (the study: by depth) against the reference learners, each learner's error, the GD / SGD steps with
    the learners' own lowest error, ILWD's number of probe inputs and kNN's implicit-weight stability in it
    (fit -> probes per dimension -> relative change)."""

    SCHEMA: ClassVar[int] = 1

    learner_error: dict[str, list[float]]
    depths: dict[int, ModelComparison]
    step_sizes: dict[str, float]
    ilwd_queries: int
    knn_weight_stability: dict[str, dict[int, float]]


def behaviour(models: dict[int, Learner], xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor, step_grid: list[float],
              g: torch.Generator) -> Behaviour:
    """SPD and ILWD (fitted through the origin, and with an intercept as in the authors' code) of every model (name ->
    learner; the study: depth -> trained model) to every reference learner, each one's error against i, and how
    stable kNN's implicit weights are in the number of probe inputs. ``xs`` [B, n, d], ``ys`` [B, n]: held-out
    prompts; ``queries`` [B_i, Q, d]: ILWD's probe inputs for the first B_i prompts; ``step_grid``: the GD / SGD step
    sizes tried (each model gets the step that brings each learner closest to it, and each learner its own best)."""
    d = xs.shape[-1]
    xs_i, ys_i = xs[: len(queries)], ys[: len(queries)]

    def fits(learner) -> dict[str, torch.Tensor]:
        qp = learner.predict_queries(xs_i, ys_i, queries)
        return {"origin": implicit_weights(qp, queries), "intercept": implicit_weights(qp, queries, intercept=True)}

    learners = reference_learners(d)
    preds = {name: learner.predict(xs, ys) for name, learner in learners.items()}
    weights = {name: fits(learner) for name, learner in learners.items()}
    learner_error = {n: normalized_error(p, ys, d) for n, p in preds.items()}
    stability = {kind: implicit_weight_stability(learners["knn_3"], xs_i, ys_i, g, intercept=kind == "intercept")
                 for kind in ("origin", "intercept")}
    own_steps: dict[str, float] = {}
    grid = list(step_grid)
    makers = {"gd_1step": lambda lr: GD(steps=1, lr=lr), "sgd": SGD}
    for name, make in makers.items():  # the second variant: the step with the learner's own lowest error
        lr, _ = best_step_size(make, grid, xs, ys, d)
        own_steps[f"{name}_best"] = lr
        learner = make(lr)
        preds[f"{name}_best"] = learner.predict(xs, ys)
        weights[f"{name}_best"] = fits(learner)
        learner_error[f"{name}_best"] = normalized_error(preds[f"{name}_best"], ys, d)
    depths: dict[int, ModelComparison] = {}
    for key, model in models.items():
        mp = model.predict(xs, ys)
        mw = fits(model)
        mine_p, mine_w, chosen = dict(preds), dict(weights), {}
        for name, make in makers.items():  # the step that brings the learner closest to this model
            lr, _ = best_step_size(make, grid, xs, ys, d, target=mp)
            chosen[name] = lr
            mine_p[name] = make(lr).predict(xs, ys)
            mine_w[name] = fits(make(lr))
        depths[key] = ModelComparison(
            normalized_error(mp, ys, d), {n: spd(mp, p, d, g) for n, p in mine_p.items()},
            {n: ilwd(mw["origin"], w["origin"], g) for n, w in mine_w.items()},
            {n: ilwd(mw["intercept"], w["intercept"], g) for n, w in mine_w.items()}, chosen)
    return Behaviour(learner_error, depths, own_steps, queries.shape[1], stability)


@dataclass(frozen=True)
class NoiseTable(Result):
    """MSPD of each model (by its training noise ratio sigma^2 / tau^2, as "%.4f") to ridge at each lambda (columns by
    model, rows by lambda), the best-matching lambda per model, each noisy model's excess error over the Bayes-optimal
    ridge, and the (sigma, tau) pair of each ratio."""

    SCHEMA: ClassVar[int] = 1

    mspd_table: dict[str, dict[str, float]]
    best_ridge_lambda: dict[str, float]
    bayes_excess: dict[str, float]
    pairs: dict[str, tuple[float, float]]


def noise_table(models: dict[str, Learner], data: dict[str, tuple[torch.Tensor, torch.Tensor]], lambdas: list[float],
                pairs: dict[str, tuple[float, float]]) -> NoiseTable:
    """MSPD between each model (key: its training noise ratio sigma^2 / tau^2, as "%.4f") on prompts of its own noise
    (``data``: key -> (xs [B, n, d], ys [B, n])) and ridge at every lambda of ``lambdas`` (0: OLS); the lambda that
    best matches each model; and each noisy model's excess error over the Bayes-optimal ridge (lambda = its ratio)."""
    table: dict[str, dict[str, float]] = {}
    excess: dict[str, float] = {}
    for key, model in models.items():
        xs, ys = data[key]
        d = xs.shape[-1]
        mp = model.predict(xs, ys)
        table[key] = {f"{lam:.4f}": mspd(mp, _ridge(lam).predict(xs, ys), d) for lam in sorted(lambdas)}
        if float(key) > 0:
            excess[key] = bayes_excess(model, xs, ys, float(key))
    best = {col: float(min(row, key=row.get)) for col, row in table.items()}
    return NoiseTable(table, best, excess, pairs)


def _ridge(lam: float) -> Learner:
    return OLS() if lam == 0 else Ridge(lam)


def bayes_excess(model: Learner, xs: torch.Tensor, ys: torch.Tensor, lam: float) -> float:
    """The model's squared error on ``xs`` [B, n, d], ``ys`` [B, n], averaged over prefixes n >= 1, relative to the
    Bayes-optimal ridge (``lam`` = sigma^2 / tau^2) on the same prompts, minus 1."""
    d = xs.shape[-1]
    mine = float(np.mean(normalized_error(model.predict(xs, ys), ys, d)[1:]))
    bayes = float(np.mean(normalized_error(_ridge(lam).predict(xs, ys), ys, d)[1:]))
    return mine / bayes - 1.0


@dataclass(frozen=True)
class RidgeConstruction:
    """Theorem 2's Sherman-Morrison transformer at ``lam``: its size, its largest relative deviation from ridge, and
    SPD/d (mean over n >= 1) from each model to it."""

    lam: float
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    max_relative_error: float
    spd: dict[int, float]


@dataclass(frozen=True)
class Constructions(Result):
    """Theorem 1's one-step-GD transformer at step ``lr`` checked on ``prompts`` prompts (size, largest relative
    deviation from GD, SPD/d from each model to it) and Theorem 2's (:class:`RidgeConstruction`)."""

    SCHEMA: ClassVar[int] = 1

    lr: float
    prompts: int
    n_layers: int
    d_model: int
    d_mlp: int
    max_relative_error: float
    spd: dict[int, float]
    ridge: RidgeConstruction


@torch.no_grad()
def constructions(models: dict[int, Learner], xs: torch.Tensor, ys: torch.Tensor, lr: float, lam: float,
                  g: torch.Generator) -> Constructions:
    """Akyürek et al.'s constructions as weights, on prompts ``xs`` [B, n, d], ``ys`` [B, n]: the 2-block one-step-GD
    transformer (Theorem 1) at step ``lr`` and the Sherman-Morrison ridge transformer (Theorem 2) at ``lam``, each
    checked against its learner in float64, and compared with every model (name -> learner) by SPD."""
    d, n_points = xs.shape[-1], xs.shape[1]
    model = gd_step_model(d, n_points, lr)
    task = LinearRegression(LinRegConfig(d=d, n_points=n_points, encoding="akyurek"))
    x64, y64 = xs.double(), ys.double()  # the learners answer in their inputs' dtype: compare in float64
    built = task.predictions(model(task.encode(x64, y64)))
    gd = GD(steps=1, lr=lr).predict(x64, y64)
    # Theorem 2: ridge by Sherman-Morrison updates
    ridge_built = ridge_model(d, n_points, lam)
    ridge_pred = task.predictions(ridge_built(task.encode(x64, y64)))
    ridge_ref = Ridge(lam).predict(x64, y64)
    to_gd, to_ridge = {}, {}
    for key, learner in models.items():
        mine = learner.predict(xs, ys)
        to_gd[key] = spd(mine, built, d, g).average()
        to_ridge[key] = spd(mine, ridge_pred, d, g).average()
    ridge = RidgeConstruction(lam, ridge_built.cfg.n_layers, ridge_built.cfg.d_model, ridge_built.cfg.mlp_dim, ridge_built.cfg.n_heads,
                              float((ridge_pred - ridge_ref).abs().max() / ridge_ref.abs().max()), to_ridge)
    return Constructions(lr, len(xs), model.cfg.n_layers, model.cfg.d_model, model.cfg.mlp_dim,
                         float((built - gd).abs().max() / gd.abs().max()), to_gd, ridge)
