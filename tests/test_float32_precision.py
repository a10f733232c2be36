"""float32 Gaussian log-densities and M-steps keep their digits for tight, far-apart clusters.

Three clusters 10 apart with standard deviation 0.01 (N = 60, D = 2, K = 3: the shapes of
tests/helpers.py). The expanded quadratic form about the data mean lost ~eps32·(|x - c|/σ)² ≈ 0.1
nat per point here (0.66 nat in total at the fitted parameters, 2 nats in the fit's reported value);
the per-component centred table and the two-pass M-step of `GaussianFamily` do not.
Reference: a float64 NumPy/SciPy evaluation at the same (float32) parameters.
Stated tolerance: 1e-3 nats for ℓ (|ℓ| ≈ 330), 1e-3 relative for the variances (σ² = 1e-4).
"""

import jax
import numpy as np
import pytest
from helpers import GMM_MAX_ITER
from scipy.special import logsumexp

import jaxem as em
from jaxem.models import GaussianMixtureParams, gaussian_hmm, gaussian_mixture

N, D, K = 60, 2, 3
CENTRES = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
X64 = CENTRES[np.arange(N) % K] + 0.01 * np.random.default_rng(0).normal(size=(N, D))
X32 = X64.astype(np.float32)
MODELS = {kind: gaussian_mixture(K, kind) for kind in ("full", "diag", "spherical", "tied")}
TOLERANCE = 1e-3


def reference_log_likelihood(params, x):
    """float64 Σ_n log Σ_k w_k N(x_n | μ_k, Σ_k) from NumPy's Cholesky, independent of jaxem."""
    w, mu = (np.asarray(a, np.float64) for a in params[:2])
    cov = np.asarray(params.covariances, np.float64)
    table = []
    for k in range(K):
        if cov.ndim == 3:
            c = cov[k]
        elif cov.ndim == 2 and cov.shape == (K, D):
            c = np.diag(cov[k])
        elif cov.ndim == 2:
            c = cov
        else:
            c = cov[k] * np.eye(D)
        chol = np.linalg.cholesky(c)
        y = np.linalg.solve(chol, (np.asarray(x, np.float64) - mu[k]).T)
        table.append(np.log(w[k]) - 0.5 * np.sum(y * y, axis=0) - np.sum(np.log(np.diag(chol)))
                     - 0.5 * D * np.log(2 * np.pi))
    return float(np.sum(logsumexp(np.stack(table, axis=1), axis=1)))


def as_float32(params):
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    return params._replace(weights=params.weights / params.weights.sum())


@pytest.mark.parametrize("kind", list(MODELS))
def test_float32_log_likelihood_matches_float64_reference(kind):
    model = MODELS[kind]
    fitted = em.fit(model, X64, model.init(jax.random.key(0), X64), max_iter=GMM_MAX_ITER).params
    params32 = as_float32(fitted)
    value = float(model.log_likelihood(params32, X32))
    assert abs(value - reference_log_likelihood(params32, X32)) <= TOLERANCE


@pytest.mark.parametrize("kind", list(MODELS))
def test_float32_fit_reports_its_true_log_likelihood(kind):
    model = MODELS[kind]
    start = as_float32(model.init(jax.random.key(0), X64))
    result = em.fit(model, X32, start, max_iter=GMM_MAX_ITER)
    assert bool(result.finite)
    assert abs(float(result.log_likelihood) - reference_log_likelihood(result.params, X32)) <= TOLERANCE
    start64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), start)
    start64 = start64._replace(weights=start64.weights / start64.weights.sum())
    result64 = em.fit(model, X64, start64, max_iter=GMM_MAX_ITER)
    assert abs(float(result.log_likelihood) - float(result64.log_likelihood)) <= 10 * TOLERANCE


def test_float32_m_step_variances_keep_their_relative_precision():
    """One M-step from the true cluster labels: float32 variances within 1e-3 (relative) of a
    NumPy float64 weighted covariance; the one-pass E[x²] - μ² was off by ~eps32·100/1e-4 ≈ 10%."""
    labels = np.arange(N) % K
    resp = np.eye(K)[labels]
    params = MODELS["full"].from_responsibilities(resp.astype(np.float32), X32)
    assert isinstance(params, GaussianMixtureParams)
    for k in range(K):
        points = X32[labels == k].astype(np.float64)
        expected = np.cov(points.T, bias=True) + MODELS["full"].reg_covar * np.eye(D)
        np.testing.assert_allclose(np.asarray(params.covariances[k], np.float64), expected, rtol=1e-3,
                                   atol=1e-3 * expected.diagonal().min())


def test_float32_gaussian_hmm_emissions_share_the_accurate_path():
    """The Gaussian HMM's emission table at float32 parameters equals float64 per-step log-densities."""
    model = gaussian_hmm(K, "full")
    mixture = MODELS["full"]
    fitted = em.fit(mixture, X64, mixture.init(jax.random.key(0), X64), max_iter=GMM_MAX_ITER).params
    fitted = as_float32(fitted)
    table = np.asarray(model.emission_table(
        em.models.GaussianHMMParams(fitted.weights, np.full((K, K), 1 / K, np.float32), fitted.means,
                                    fitted.covariances), X32), np.float64)
    for k in range(K):
        one = GaussianMixtureParams(np.ones(1), np.asarray(fitted.means[k:k + 1]),
                                    np.asarray(fitted.covariances[k:k + 1]))
        for n in range(0, N, 7):
            reference = reference_log_likelihood_single(one, X32[n])
            # far from its state a step's log-density is ~ -1e6: float32 resolves it to ~1e-7 relative
            assert abs(table[n, k] - reference) <= TOLERANCE / 10 + 1e-6 * abs(reference)


def reference_log_likelihood_single(params, x):
    cov = np.asarray(params.covariances[0], np.float64)
    chol = np.linalg.cholesky(cov)
    y = np.linalg.solve(chol, np.asarray(x, np.float64) - np.asarray(params.means[0], np.float64))
    return -0.5 * y @ y - np.sum(np.log(np.diag(chol))) - 0.5 * D * np.log(2 * np.pi)
