"""Reference learners for in-context linear regression, all answering ``predict(xs, ys)``.

xs [B, n, d], ys [B, n] -> preds [B, n]; preds[:, i] uses only the first i pairs
(preds[:, 0] uses none). ``predict_queries(xs, ys, queries [B, Q, d])`` -> [B, n, Q]
predicts probe inputs from every prefix (used for implicit weights, ILWD).
"""

from iclab.learners.linear import GD, OLS, SGD, Averaging, Bayes, LinearLearner, PriorMean, Ridge, ols_weights, prefix_moments, ridge_weights
from iclab.learners.model import ModelLearner
from iclab.learners.nonparametric import KNN, DiscreteMMSE

RIDGES = {"ridge_0.01": 0.01, "ridge_0.1": 0.1, "ridge_1": 1.0}  # the reference ridges, by name


def reference_learners(d: int) -> dict[str, LinearLearner | KNN]:
    """The learners every trained model is compared with (Akyürek et al.'s set), by name. GD and SGD have fixed
    steps scaled to d here; the linreg study replaces them, per model, by the step of a grid that brings each
    closest to that model and adds the steps with their own lowest error."""
    return {
        "ols": OLS(),
        **{name: Ridge(lam) for name, lam in RIDGES.items()},
        "gd_1step": GD(steps=1, lr=0.5 / d / 10),
        "sgd": SGD(lr=0.5 / d),
        "knn_3": KNN(3, "uniform"),
        "knn_3_inv": KNN(3, "inverse_distance"),
        "averaging": Averaging(),
    }


__all__ = [
    "GD",
    "KNN",
    "OLS",
    "SGD",
    "Averaging",
    "Bayes",
    "DiscreteMMSE",
    "LinearLearner",
    "ModelLearner",
    "PriorMean",
    "RIDGES",
    "Ridge",
    "reference_learners",
    "ols_weights",
    "prefix_moments",
    "ridge_weights",
]
