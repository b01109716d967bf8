"""Spin-glass library: the Hamiltonian is the model's loss, the solvers agree with closed forms."""

import math

import pytest
import torch

from iclab.spinglass import (
    amp,
    amp_paper,
    amp_reference_loop,
    contrast_ratio,
    energy,
    exact_measure,
    langevin,
    linear_attention,
    matrix_to_spins,
    min_norm_solution,
    predict,
    sample_prompts,
    spin_glass,
    spins_to_matrix,
    statistics,
    generalization_error,
    train_linear_attention,
    zero_mode_fraction,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def glass_for(P=200, N=30, D=4, lambda0=0.1, seed=0, **kw):
    prompts = sample_prompts(P, N, D, gen(seed), **kw)
    s = statistics(prompts.Z)
    return prompts, s, spin_glass(s, prompts.y_query, lambda0)


def test_prediction_from_statistics_equals_the_linear_attention_layer():
    prompts = sample_prompts(7, 9, 3, gen())
    W = torch.randn(4, 4, generator=gen(1), dtype=torch.float64)
    W[:, -1] = torch.randn(4, generator=gen(2), dtype=torch.float64)  # the inactive column must not matter
    direct = linear_attention(prompts.Z, W)[:, 3, 9]
    torch.testing.assert_close(predict(statistics(prompts.Z), matrix_to_spins(W)), direct)


def test_hamiltonian_equals_the_regularised_training_loss_for_random_weights():
    prompts, s, glass = glass_for(P=50, lambda0=0.3)
    for seed in range(3):
        spins = torch.randn(glass.h.shape[0], generator=gen(seed), dtype=torch.float64)
        loss = 0.5 * (prompts.y_query - predict(s, spins)).pow(2).mean() + 0.15 * spins.pow(2).sum()
        torch.testing.assert_close(energy(glass, spins), loss)


def test_boltzmann_mean_is_the_ridge_solution_and_a_stationary_point():
    prompts, s, glass = glass_for()
    S = s.reshape(s.shape[0], -1)
    P, K = S.shape
    ridge = torch.linalg.solve(S.T @ S / P + 0.1 * torch.eye(K, dtype=S.dtype), S.T @ prompts.y_query / P)
    measure = exact_measure(glass, beta=100.0)
    torch.testing.assert_close(measure.mean, ridge)
    spins = measure.mean.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(glass, spins), spins)
    assert float(grad.abs().max()) < 1e-10
    torch.testing.assert_close(measure.cov, torch.linalg.inv(100.0 * glass.precision))


def test_exact_samples_have_the_exact_moments():
    _, _, glass = glass_for(P=100, D=2, lambda0=0.5)
    measure = exact_measure(glass, beta=2.0)
    x = measure.sample(200_000, gen(3))
    torch.testing.assert_close(x.mean(0), measure.mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), measure.cov, atol=0.02, rtol=0.05)


def test_langevin_matches_the_exact_gaussian():
    _, _, glass = glass_for(P=100, D=2, lambda0=0.5)
    measure = exact_measure(glass, beta=2.0)
    x = langevin(glass, beta=2.0, n_chains=400, n_steps=3000, generator=gen(4))
    torch.testing.assert_close(x.mean(0), measure.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.diagonal(torch.cov(x.T)), measure.variances, atol=0.03, rtol=0.15)


def test_vectorised_amp_equals_the_per_coordinate_loop():
    _, _, glass = glass_for(P=300, D=3, lambda0=0.1)
    fast = amp_paper(glass, beta=100.0, max_iter=60)
    slow = amp_reference_loop(glass, beta=100.0, max_iter=60)
    assert fast.iterations == slow.iterations
    torch.testing.assert_close(fast.m, slow.m)
    torch.testing.assert_close(fast.v, slow.v)


def test_converged_amp_is_close_to_the_exact_mean_and_divergence_is_flagged():
    _, _, glass = glass_for(P=2000, N=50, D=4, lambda0=0.01)
    exact = exact_measure(glass, beta=100.0)
    result = amp_paper(glass, beta=100.0, max_iter=500)
    assert result.converged
    rel = float(torch.linalg.norm(result.m - exact.mean) / torch.linalg.norm(exact.mean))
    assert rel < 0.1, rel
    bad = amp(glass, beta=100.0, max_iter=3)
    assert not bad.converged and bad.iterations == 3


def test_zero_modes_vanish_once_p_reaches_d_times_d_plus_one():
    D = 3
    K = D * (D + 1)
    for P, expected in [(4, 1 - 4 / K), (K - 1, 1 / K), (K, 0.0), (3 * K, 0.0)]:
        s = statistics(sample_prompts(P, 20, D, gen(P)).Z)
        assert zero_mode_fraction(s) == pytest.approx(expected)


def test_contrast_ratio_of_the_icl_solution():
    D = 5
    W = torch.zeros(D + 1, D + 1, dtype=torch.float64)
    W[:D, :D] = 3.0 * torch.eye(D)
    assert contrast_ratio(W) == pytest.approx(math.sqrt(D / (D + 1)))
    assert contrast_ratio(-W) == pytest.approx(-math.sqrt(D / (D + 1)))


def test_many_tasks_give_the_icl_solution_and_generalise_to_unseen_tasks():
    D = 5
    prompts, s, glass = glass_for(P=3000, N=200, D=D, lambda0=0.01)
    W = spins_to_matrix(exact_measure(glass, 100.0).mean, D)
    assert contrast_ratio(W) > 0.9
    torch.testing.assert_close(W[:D, :D], torch.eye(D, dtype=W.dtype), atol=0.2, rtol=0)
    fresh = sample_prompts(500, 200, D, gen(99))
    assert generalization_error(matrix_to_spins(W), fresh) < 0.1 * float(fresh.y_query.var())


def test_gradient_training_reaches_the_boltzmann_mean():
    prompts, s, glass = glass_for(P=400, N=40, D=3, lambda0=0.05)
    exact = exact_measure(glass, 100.0).mean
    trained = train_linear_attention(s, prompts.y_query, 0.05, gen(5), lr=1e-2, steps=3000)
    torch.testing.assert_close(trained.spins, exact, atol=2e-3, rtol=0)
    separate = train_linear_attention(s, prompts.y_query, 0.0, gen(5), variant="separate", lr=1e-2, steps=3000)
    fresh = sample_prompts(300, 40, 3, gen(7))
    assert generalization_error(separate.spins, fresh) < 0.5 * float(fresh.y_query.var())


def test_min_norm_solution_interpolates_below_the_threshold():
    D = 3
    prompts = sample_prompts(8, 20, D, gen(1))
    s = statistics(prompts.Z)
    spins = min_norm_solution(s, prompts.y_query)
    torch.testing.assert_close(predict(s, spins), prompts.y_query)


@pytest.mark.parametrize("P, D, lambda0", [(300, 3, 0.1), (2000, 4, 0.01), (500, 4, 1.0)])
def test_amp_with_the_onsager_term_converges_to_the_exact_mean_and_the_papers_update_does_not(P, D, lambda0):
    _, _, glass = glass_for(P=P, N=50, D=D, lambda0=lambda0)
    exact = exact_measure(glass, beta=100.0).mean
    ours = amp(glass, beta=100.0, tol=1e-24, max_iter=5000)
    theirs = amp_paper(glass, beta=100.0, tol=1e-24, max_iter=5000)
    assert ours.converged, ours.error
    torch.testing.assert_close(ours.m, exact, atol=1e-5, rtol=0)
    gap = float(torch.linalg.norm(theirs.m - exact) / torch.linalg.norm(exact))
    assert gap > 1e-3, gap  # the paper's fixed point is elsewhere


def test_trained_maps_depend_on_the_random_start_only_when_tasks_are_few():
    from iclab.spinglass.experiments import Fig2, Solver, fig2
    from iclab.studies.common import generator

    maps = fig2(Fig2(D=5, N=40, P=(4, 400), P_gd=200, gd_steps=300, n_test=50, inits=3), Solver(), generator(0, "fig2")).maps
    few, many = maps[4], maps[400]
    assert len(few.trained) == 3
    assert few.init_spread > 0.3 and many.init_spread < 0.05  # the null space keeps each start's own part
    assert many.trained_gap_to_exact < few.trained_gap_to_exact
