"""Trained in-context regressors against the reference learners (Akyürek et al. 2023, sections 3-4): SPD, ILWD and
errors per model, the MSPD table across label noise with each model's Bayes excess, and the constructions of
Theorems 1 and 2 against the models. Every function takes learners (anything with ``predict(xs, ys)``; trained
models through :class:`iclab.learners.ModelLearner`) and held-out prompts, and returns JSON-able numbers."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from iclab.analysis.learner_metrics import best_step_size, ilwd, implicit_weight_stability, implicit_weights, mspd, normalized_error, spd
from iclab.config import to_dict
from iclab.constructions import gd_step_model, ridge_model
from iclab.learners import GD, OLS, SGD, Ridge, reference_learners
from iclab.tasks import LinearRegression, LinRegConfig


class Learner(Protocol):
    def predict(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor: ...


def behaviour(models: dict[str, Learner], xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor, step_grid: list[float],
              g: torch.Generator) -> dict[str, Any]:
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
    out: dict[str, Any] = {"learner_error": {n: normalized_error(p, ys, d) for n, p in preds.items()}, "depths": {},
                           "step_sizes": {}, "ilwd_queries": queries.shape[1],
                           "knn_weight_stability": {kind: implicit_weight_stability(learners["knn_3"], xs_i, ys_i, g, intercept=kind == "intercept")
                                                    for kind in ("origin", "intercept")}}
    grid = list(step_grid)
    makers = {"gd_1step": lambda lr: GD(steps=1, lr=lr), "sgd": SGD}
    for name, make in makers.items():  # the second variant: the step with the learner's own lowest error
        lr, _ = best_step_size(make, grid, xs, ys, d)
        out["step_sizes"][f"{name}_best"] = lr
        learner = make(lr)
        preds[f"{name}_best"] = learner.predict(xs, ys)
        weights[f"{name}_best"] = fits(learner)
        out["learner_error"][f"{name}_best"] = normalized_error(preds[f"{name}_best"], ys, d)
    for key, model in models.items():
        mp = model.predict(xs, ys)
        mw = fits(model)
        mine_p, mine_w, chosen = dict(preds), dict(weights), {}
        for name, make in makers.items():  # the step that brings the learner closest to this model
            lr, _ = best_step_size(make, grid, xs, ys, d, target=mp)
            chosen[name] = lr
            mine_p[name] = make(lr).predict(xs, ys)
            mine_w[name] = fits(make(lr))
        out["depths"][key] = {
            "error": normalized_error(mp, ys, d),
            "spd": {n: to_dict(spd(mp, p, d, g)) for n, p in mine_p.items()},
            "ilwd": {n: to_dict(ilwd(mw["origin"], w["origin"], g)) for n, w in mine_w.items()},
            "ilwd_intercept": {n: to_dict(ilwd(mw["intercept"], w["intercept"], g)) for n, w in mine_w.items()},
            "step_sizes": chosen,
        }
    return out


def noise_table(models: dict[str, Learner], data: dict[str, tuple[torch.Tensor, torch.Tensor]], lambdas: list[float]) -> dict[str, Any]:
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
    return {"mspd_table": table, "best_ridge_lambda": best, "bayes_excess": excess}


def _ridge(lam: float) -> Learner:
    return OLS() if lam == 0 else Ridge(lam)


def bayes_excess(model: Learner, xs: torch.Tensor, ys: torch.Tensor, lam: float) -> float:
    """The model's squared error on ``xs`` [B, n, d], ``ys`` [B, n], averaged over prefixes n >= 1, relative to the
    Bayes-optimal ridge (``lam`` = sigma^2 / tau^2) on the same prompts, minus 1."""
    d = xs.shape[-1]
    mine = float(np.mean(normalized_error(model.predict(xs, ys), ys, d)[1:]))
    bayes = float(np.mean(normalized_error(_ridge(lam).predict(xs, ys), ys, d)[1:]))
    return mine / bayes - 1.0


@torch.no_grad()
def constructions(models: dict[str, Learner], xs: torch.Tensor, ys: torch.Tensor, lr: float, lam: float,
                  g: torch.Generator) -> dict[str, Any]:
    """Akyürek et al.'s constructions as weights, on prompts ``xs`` [B, n, d], ``ys`` [B, n]: the 2-block one-step-GD
    transformer (Theorem 1) at step ``lr`` and the Sherman-Morrison ridge transformer (Theorem 2) at ``lam``, each
    checked against its learner in float64, and compared with every model (name -> learner) by SPD."""
    d, n_points = xs.shape[-1], xs.shape[1]
    model = gd_step_model(d, n_points, lr)
    task = LinearRegression(LinRegConfig(d=d, n_points=n_points, encoding="akyurek"))
    x64, y64 = xs.double(), ys.double()  # the learners answer in their inputs' dtype: compare in float64
    built = task.predictions(model(task.encode(x64, y64)))
    gd = GD(steps=1, lr=lr).predict(x64, y64)
    out: dict[str, Any] = {"lr": lr, "prompts": len(xs), "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model, "d_mlp": model.cfg.mlp_dim,
                           "max_relative_error": float((built - gd).abs().max() / gd.abs().max()), "spd": {}}
    # Theorem 2: ridge by Sherman-Morrison updates
    ridge_built = ridge_model(d, n_points, lam)
    ridge_pred = task.predictions(ridge_built(task.encode(x64, y64)))
    ridge_ref = Ridge(lam).predict(x64, y64)
    ridge = {"lam": lam, "n_layers": ridge_built.cfg.n_layers, "d_model": ridge_built.cfg.d_model,
             "d_mlp": ridge_built.cfg.mlp_dim, "n_heads": ridge_built.cfg.n_heads,
             "max_relative_error": float((ridge_pred - ridge_ref).abs().max() / ridge_ref.abs().max()), "spd": {}}
    for key, learner in models.items():
        mine = learner.predict(xs, ys)
        out["spd"][key] = float(np.mean(spd(mine, built, d, g).mean[1:]))
        ridge["spd"][key] = float(np.mean(spd(mine, ridge_pred, d, g).mean[1:]))
    out["ridge"] = ridge
    return out
