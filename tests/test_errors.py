"""Block-averaging standard errors against hand-computed values and analytic results for known processes."""
import numpy as np
import pytest
from scipy.signal import lfilter

from difftre.observables.errors import (
    block_jackknife,
    block_standard_error,
    blocking_curve,
    optimal_block_count,
)


def ar1(phi, n, seed, sigma=1.0):
    """Stationary AR(1) x_t = phi x_{t-1} + sqrt(1 - phi^2) sigma e_t: variance sigma^2, rho_k = phi^k."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(0.0, sigma)
    x, _ = lfilter([np.sqrt(1 - phi ** 2) * sigma], [1.0, -phi], rng.normal(size=n), zi=[phi * x0])
    return x


def variance_of_mean(phi, length, sigma=1.0):
    """Exact Var(mean of `length` consecutive AR(1) values) = sigma^2/L [1 + 2 sum_k (1 - k/L) phi^k]."""
    k = np.arange(1, length)
    return sigma ** 2 / length * (1.0 + 2.0 * np.sum((1.0 - k / length) * phi ** k))


def test_hand_computed_values():
    # blocks [1, 2, 3] and [4, 5]: A = (6, 9), W = (3, 2), mean 3; SE^2 = 2/1 * (3^2 + 3^2) / 5^2
    assert block_standard_error([1.0, 2, 3, 4, 5], n_blocks=2) == pytest.approx(1.2, rel=1e-15)
    # weights (1, 0 | 1, 2): A = (1, 11), W = (1, 3), mean 3; SE^2 = 2 * (2^2 + 2^2) / 4^2 = 1
    assert block_standard_error([1.0, 2, 3, 4], weights=[1.0, 0, 1, 2], n_blocks=2) == pytest.approx(1.0, rel=1e-15)


def test_uniform_weights_reduce_to_the_textbook_estimator(rng):
    x = rng.normal(size=(1000, 3))
    block_means = x.reshape(10, 100, 3).mean(axis=1)
    textbook = block_means.std(axis=0, ddof=1) / np.sqrt(10)
    for weights in (None, np.full(1000, 1e-3), np.full(1000, 3.7)):
        np.testing.assert_allclose(block_standard_error(x, weights, n_blocks=10), textbook, rtol=1e-12)
    # trailing dimensions are independent elements
    per_column = [block_standard_error(x[:, c], n_blocks=10) for c in range(3)]
    np.testing.assert_allclose(block_standard_error(x, n_blocks=10), per_column, rtol=1e-14)


def test_uncorrelated_gaussian_over_many_seeds():
    n, sigma, seeds = 1024, 2.0, 400
    data = np.random.default_rng(1).normal(0.0, sigma, (seeds, n))
    fixed = np.array([block_standard_error(x, n_blocks=64) for x in data]) ** 2
    automatic = np.array([block_standard_error(x) for x in data]) ** 2
    # each SE^2 has relative spread sqrt(2 / 63) = 0.18, so the mean of 400 is within 0.9% (1 sigma)
    assert fixed.mean() == pytest.approx(sigma ** 2 / n, rel=0.04)
    assert automatic.mean() == pytest.approx(sigma ** 2 / n, rel=0.04)


def test_ar1_blocking_matches_the_exact_variance():
    phi, n, length, seeds = 0.8, 2 ** 14, 128, 200
    series = [ar1(phi, n, seed) for seed in range(seeds)]
    n_blocks = n // length
    fixed = np.mean([block_standard_error(x, n_blocks=n_blocks) ** 2 for x in series])
    # E[SE^2] of B equal blocks of length L is exactly (Var(mean_L) - Var(mean_N)) / (B - 1)
    expected = (variance_of_mean(phi, length) - variance_of_mean(phi, n)) / (n_blocks - 1)
    assert fixed == pytest.approx(expected, rel=0.05)   # 200 seeds, B = 128: 1 sigma = 0.9%
    # the automatic choice reaches the plateau: SE^2 = sigma^2 / N (1 + phi) / (1 - phi) (= 9 sigma^2 / N)
    automatic = np.mean([block_standard_error(x) ** 2 for x in series])
    assert automatic == pytest.approx((1 + phi) / (1 - phi) / n, rel=0.06)
    # the blocking curve rises from sigma/sqrt(N) at L = 1 to the plateau
    lengths, errors, uncertainties = blocking_curve(series[0])
    assert lengths[0] == 1 and lengths[-1] == n // 16
    assert errors[0] == pytest.approx(1 / np.sqrt(n), rel=0.05)
    np.testing.assert_allclose(uncertainties, errors / np.sqrt(2 * (n // lengths - 1)), rtol=1e-14)


def test_too_short_a_trajectory_warns():
    with pytest.warns(RuntimeWarning, match="no blocking plateau"):
        count = optimal_block_count(ar1(0.995, 512, seed=0))
    assert count == 16


def test_importance_weights_against_brute_force():
    # states from p = N(0, 1), reweighted to q = N(mu, 1): w_i ~ exp(mu x_i), <x>_w estimates mu;
    # the self-normalised estimator has Var = E_p[(q/p)^2 (x - mu)^2] / N = exp(mu^2) (1 + mu^2) / N
    mu, n, repetitions = 0.5, 2000, 2000
    x = np.random.default_rng(2).normal(size=(repetitions, n))
    w = np.exp(mu * x)
    estimates = np.sum(w * x, axis=1) / np.sum(w, axis=1)
    analytic = np.exp(mu ** 2) * (1 + mu ** 2) / n
    assert estimates.var() == pytest.approx(analytic, rel=0.08)   # brute force: 2000 independent estimates
    predicted = np.array([block_standard_error(x[r], w[r], n_blocks=100) ** 2 for r in range(repetitions)])
    assert predicted.mean() == pytest.approx(analytic, rel=0.03)
    assert predicted.mean() == pytest.approx(estimates.var(), rel=0.08)


def test_jackknife_of_a_linear_function_equals_the_direct_error(rng):
    x, y = rng.normal(size=(2, 1200, 4))
    estimate, error = block_jackknife(lambda a, b: 2.0 * a - 3.0 * b, [x, y], n_blocks=24)
    np.testing.assert_allclose(estimate, np.mean(2 * x - 3 * y, axis=0), rtol=1e-12)
    np.testing.assert_allclose(error, block_standard_error(2 * x - 3 * y, n_blocks=24), rtol=1e-12)


def test_jackknife_of_the_variance_over_many_seeds():
    # Var(sample variance) of Gaussian data -> 2 sigma^4 / N
    n, sigma, seeds = 2048, 1.5, 300
    data = np.random.default_rng(3).normal(0.0, sigma, (seeds, n))
    squared_errors = [block_jackknife(lambda m2, m1: m2 - m1 ** 2, [x ** 2, x], n_blocks=64)[1] ** 2 for x in data]
    assert np.mean(squared_errors) == pytest.approx(2 * sigma ** 4 / n, rel=0.05)


def test_bad_arguments():
    with pytest.raises(ValueError, match="weights must have shape \\(4,\\)"):
        block_standard_error(np.ones(4), weights=np.ones(3), n_blocks=2)
    with pytest.raises(ValueError, match="non-negative"):
        block_standard_error(np.ones(4), weights=[1.0, -1, 1, 1], n_blocks=2)
    with pytest.raises(ValueError, match="n_blocks must be in \\[2, 4\\]"):
        block_standard_error(np.ones(4), n_blocks=5)
    with pytest.raises(ValueError, match="leading state axis"):
        block_standard_error(np.ones(1), n_blocks=2)
    with pytest.raises(ValueError, match="same number of states"):
        block_jackknife(lambda a, b: a + b, [np.ones(4), np.ones(5)], n_blocks=2)
