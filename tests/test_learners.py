"""Reference learners agree with scikit-learn and closed forms, at every prefix (n < d included)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, Ridge as SkRidge
from sklearn.neighbors import KNeighborsRegressor

from iclab.learners import GD, KNN, OLS, SGD, Averaging, Bayes, DiscreteMMSE, Ridge, prefix_moments, ridge_weights

B, N, D = 6, 12, 5


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    w = torch.randn(B, D, generator=g, dtype=torch.float64)
    ys = torch.einsum("bnd,bd->bn", xs, w) + 0.1 * torch.randn(B, N, generator=g, dtype=torch.float64)
    return xs, ys


def per_prefix(fit_predict, xs, ys):
    """The slow reference: one fit per prompt and per prefix (the loop the learners avoid)."""
    out = np.zeros((B, N))
    for b in range(B):
        for i in range(1, N):
            out[b, i] = fit_predict(xs[b, :i].numpy(), ys[b, :i].numpy(), xs[b, i : i + 1].numpy())
    return out


def test_ols_matches_sklearn_including_underdetermined_prefixes(data):
    xs, ys = data
    ref = per_prefix(lambda X, y, q: LinearRegression(fit_intercept=False).fit(X, y).predict(q)[0], xs, ys)
    np.testing.assert_allclose(OLS().predict(xs, ys).numpy(), ref, atol=1e-8)
    # under-determined prefixes give the minimum-norm interpolant
    w = OLS().weights(xs, ys)[:, 3]
    np.testing.assert_allclose(w.numpy(), (torch.linalg.pinv(xs[:, :3]) @ ys[:, :3].unsqueeze(-1)).squeeze(-1).numpy(), atol=1e-10)


@pytest.mark.parametrize("lam", [0.01, 0.5, 3.0])
def test_ridge_matches_sklearn(data, lam):
    xs, ys = data
    ref = per_prefix(lambda X, y, q: SkRidge(alpha=lam, fit_intercept=False).fit(X, y).predict(q)[0], xs, ys)
    np.testing.assert_allclose(Ridge(lam).predict(xs, ys).numpy(), ref, atol=1e-9)


def test_sherman_morrison_ridge_equals_the_direct_solve_to_machine_precision(data):
    xs, ys = data
    A, b = prefix_moments(xs, ys)
    direct = torch.linalg.solve(A + 0.3 * torch.eye(D, dtype=torch.float64), b.unsqueeze(-1)).squeeze(-1)
    assert float((ridge_weights(xs, ys, 0.3) - direct).abs().max()) < 1e-13


def test_bayes_is_the_closed_form_posterior_mean(data):
    xs, ys = data
    sigma, tau = 0.5, 2.0
    # posterior of w ~ N(0, tau^2 I) given y = X w + N(0, sigma^2): mean = tau^2 X^T (tau^2 X X^T + sigma^2 I)^-1 y
    i = 4
    X, y = xs[:, :i], ys[:, :i]
    K = tau**2 * X @ X.transpose(1, 2) + sigma**2 * torch.eye(i, dtype=torch.float64)
    mean = tau**2 * (X.transpose(1, 2) @ torch.linalg.solve(K, y.unsqueeze(-1))).squeeze(-1)
    torch.testing.assert_close(Bayes(sigma, tau).weights(xs, ys)[:, i], mean)
    torch.testing.assert_close(Bayes(0.0).predict(xs, ys), OLS().predict(xs, ys))


@pytest.mark.parametrize("weights", ["uniform", "inverse_distance"])
def test_knn_matches_sklearn(data, weights):
    xs, ys = data
    sk_weights = "uniform" if weights == "uniform" else (lambda d: 1.0 / d**2)

    def fit_predict(X, y, q):
        return KNeighborsRegressor(n_neighbors=min(3, len(X)), weights=sk_weights).fit(X, y).predict(q)[0]

    ref = per_prefix(fit_predict, xs, ys)
    np.testing.assert_allclose(KNN(3, weights).predict(xs, ys).numpy(), ref, atol=1e-10)
    pq = KNN(3, weights).predict_queries(xs, ys, xs)  # querying the next input = predict
    np.testing.assert_allclose(torch.diagonal(pq, dim1=1, dim2=2).numpy(), ref, atol=1e-10)


def test_gd_sgd_and_averaging_follow_their_update_rules(data):
    xs, ys = data
    i = 7
    X, y = xs[:, :i], ys[:, :i]
    one_step = 2 * 0.05 * torch.einsum("bnd,bn->bd", X, y)  # w = w0 - 2 lr (X^T X w0 - X^T y), w0 = 0
    torch.testing.assert_close(GD(steps=1, lr=0.05).weights(xs, ys)[:, i], one_step)
    w = torch.zeros(B, D, dtype=torch.float64)
    for j in range(i):
        w = w - 2 * 0.03 * ((xs[:, j] * w).sum(-1) - ys[:, j]).unsqueeze(-1) * xs[:, j]
    torch.testing.assert_close(SGD(lr=0.03).weights(xs, ys)[:, i], w)
    torch.testing.assert_close(Averaging().weights(xs, ys)[:, i], torch.einsum("bnd,bn->bd", X, y) / i)
    many = GD(steps=500, lr=0.01).weights(xs, ys)[:, -1]  # many steps converge to least squares
    torch.testing.assert_close(many, OLS().weights(xs, ys)[:, -1], atol=1e-6, rtol=0)


def test_every_learner_predicts_from_no_data_and_ignores_future_pairs(data):
    xs, ys = data
    pool = torch.randn(4, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for learner in [OLS(), Ridge(0.1), Bayes(0.2), GD(), SGD(), Averaging(), KNN(), DiscreteMMSE(pool, 0.1)]:
        base = learner.predict(xs, ys)
        changed = ys.clone()
        changed[:, 6:] += 10.0
        torch.testing.assert_close(learner.predict(xs, changed)[:, :7], base[:, :7], msg=learner.name)


def test_discrete_mmse_is_the_pool_posterior_mean():
    g = torch.Generator().manual_seed(2)
    pool = torch.randn(3, 2, generator=g, dtype=torch.float64)
    xs = torch.randn(1, 4, 2, generator=g, dtype=torch.float64)
    ys = xs[0] @ pool[1] + 0.3 * torch.randn(4, generator=g, dtype=torch.float64)
    ys = ys.unsqueeze(0)
    i, sigma = 3, 0.5
    loglik = torch.stack([-((ys[0, :i] - xs[0, :i] @ w) ** 2).sum() / (2 * sigma**2) for w in pool])
    post = torch.softmax(loglik, 0)
    expected = (post.unsqueeze(-1) * pool).sum(0) @ xs[0, i]
    torch.testing.assert_close(DiscreteMMSE(pool, sigma).predict(xs, ys)[0, i], expected)
    torch.testing.assert_close(DiscreteMMSE(pool, sigma).predict(xs, ys)[0, 0], pool.mean(0) @ xs[0, 0])


def test_the_tuned_step_size_recovers_the_step_that_made_the_target():
    from iclab.analysis.linreg.metrics import best_step_size
    from iclab.learners import GD

    g = torch.Generator().manual_seed(0)
    xs, w = torch.randn(64, 12, 4, generator=g), torch.randn(64, 4, generator=g)
    ys = torch.einsum("bnd,bd->bn", xs, w)
    grid = [0.01, 0.03, 0.1, 0.3]
    target = GD(steps=1, lr=0.03).predict(xs, ys)
    lr, scores = best_step_size(lambda s: GD(steps=1, lr=s), grid, xs, ys, 4, target=target)
    assert lr == 0.03 and scores[1] == pytest.approx(0.0, abs=1e-12)
    own, _ = best_step_size(lambda s: GD(steps=1, lr=s), grid, xs, ys, 4)  # by its own error: a larger step helps here
    assert own > 0.01


def test_implicit_weights_with_an_intercept_recover_an_affine_map():
    from iclab.analysis.linreg.metrics import implicit_weights

    g = torch.Generator().manual_seed(0)
    queries = torch.randn(3, 40, 4, generator=g, dtype=torch.float64)
    w = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)  # [B, n, d]
    preds = torch.einsum("bnd,bqd->bnq", w, queries) + 5.0  # an offset the origin fit cannot express
    torch.testing.assert_close(implicit_weights(preds, queries, intercept=True), w)
    assert float((implicit_weights(preds, queries) - w).abs().max()) > 0.1


def test_knn_implicit_weights_settle_with_more_probes_and_linear_ones_never_move():
    from iclab.analysis.linreg.metrics import implicit_weight_stability
    from iclab.tasks import LinearRegression as Task, LinRegConfig

    xs, ys, _ = Task(LinRegConfig(d=4, n_points=9)).sample(0, 32, "eval")
    knn = implicit_weight_stability(KNN(3, "uniform"), xs, ys, torch.Generator().manual_seed(0), intercept=True)
    assert knn[32] < knn[8] < knn[2]
    ols = implicit_weight_stability(OLS(), xs, ys, torch.Generator().manual_seed(0))
    assert max(ols.values()) < 1e-10
