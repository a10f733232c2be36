"""The ready Gaussian mixture against scikit-learn's GaussianMixture and scipy, its fast
log-potential table against the per-observation log_joint, and its initialisers."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    GMM_D,
    GMM_K,
    GMM_MAX_ITER,
    GMM_N,
    clustered_data,
    full_covariances,
    jitted,
    random_gmm_params,
)
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import (
    _compute_precision_cholesky,
    _estimate_gaussian_parameters,
    _estimate_log_gaussian_prob,
)

import jaxem as em

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
# The trajectory comparisons run every covariance type with reg_covar = 0 (the same models and shapes
# as the monotonicity tests in test_fit.py, so the compiled loops are shared) and the full type with
# scikit-learn's default reg_covar = 1e-6 too; the M-step test covers reg_covar for every type.
CASES = [(kind, 0.0) for kind in COVARIANCE_TYPES] + [("full", 1e-6)]
MODELS = {(kind, reg): em.models.gaussian_mixture(GMM_K, kind, reg_covar=reg)
          for kind in COVARIANCE_TYPES for reg in (0.0, 1e-6)}
DATA = clustered_data(np.random.default_rng(2024), GMM_K, GMM_N, GMM_D, separation=3.0)


def _start(kind, seed=0):
    return random_gmm_params(np.random.default_rng(seed), kind, GMM_K, GMM_D, DATA)


def _precisions(kind, covariances):
    cov = np.asarray(covariances)
    return np.linalg.inv(cov) if kind in ("full", "tied") else 1.0 / cov


def _sklearn_fit(kind, reg, params0, tol, max_iter=GMM_MAX_ITER):
    reference = GaussianMixture(
        n_components=GMM_K, covariance_type=kind, tol=tol, max_iter=max_iter, reg_covar=reg,
        weights_init=np.asarray(params0.weights), means_init=np.asarray(params0.means),
        precisions_init=_precisions(kind, params0.covariances), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference.fit(DATA)
    return reference


def _assert_params_equal(params, reference, rtol=1e-6, atol=1e-8):
    np.testing.assert_allclose(np.asarray(params.weights), reference.weights_, rtol=rtol, atol=atol)
    np.testing.assert_allclose(np.asarray(params.means), reference.means_, rtol=rtol, atol=atol)
    np.testing.assert_allclose(np.asarray(params.covariances), reference.covariances_, rtol=rtol, atol=atol)


@pytest.mark.parametrize(("kind", "reg"), CASES)
def test_fixed_iterations_match_sklearn(kind, reg):
    """tol = 0: both run GMM_MAX_ITER M-steps; history / N is sklearn's lower_bounds_."""
    params0 = _start(kind)
    result = em.fit(MODELS[kind, reg], jnp.asarray(DATA), params0, max_iter=GMM_MAX_ITER, tol=0.0)
    reference = _sklearn_fit(kind, reg, params0, tol=0.0)
    assert reference.n_iter_ == int(result.num_iters) == GMM_MAX_ITER
    np.testing.assert_allclose(np.asarray(result.history) / GMM_N, reference.lower_bounds_,
                               rtol=1e-10, atol=0)
    _assert_params_equal(result.params, reference)
    assert not bool(result.converged) and not reference.converged_


@pytest.mark.parametrize(("kind", "reg"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_tolerance_matches_sklearn_with_one_more_m_step(kind, reg, seed):
    """With the same tol both stop on the same pair of log-likelihoods, |ℓ(θ_T) - ℓ(θ_{T-1})| < tol·N.
    jaxem evaluates ℓ(θ_T) right after the T-th M-step and stops with θ_T; scikit-learn evaluates it in
    the E-step of its iteration T + 1, after which it runs one more M-step anyway. So
    n_iter_ = num_iters + 1 and lower_bounds_ = [history[:T], log_likelihood] / N; our θ_T equals
    sklearn's parameters after T M-steps. (scikit-learn's rule is jaxem's convergence="absolute".)"""
    params0 = _start(kind, seed)
    result = em.fit(MODELS[kind, reg], jnp.asarray(DATA), params0, max_iter=GMM_MAX_ITER, tol=1e-3,
                    convergence="absolute")
    reference = _sklearn_fit(kind, reg, params0, tol=1e-3)
    t = int(result.num_iters)
    assert bool(result.converged) and reference.converged_
    assert reference.n_iter_ == t + 1
    expected_bounds = np.append(np.asarray(result.history[:t]), float(result.log_likelihood)) / GMM_N
    np.testing.assert_allclose(reference.lower_bounds_, expected_bounds, rtol=1e-10, atol=0)
    _assert_params_equal(result.params, _sklearn_fit(kind, reg, params0, tol=0.0, max_iter=t))
    # ... and differ from the parameters sklearn returns, which are one M-step further on.
    assert not np.allclose(np.asarray(result.params.means), reference.means_, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", COVARIANCE_TYPES)
def test_log_potentials_match_log_joint_and_scipy(kind):
    model = MODELS[kind, 0.0]
    params = _start(kind, seed=5)
    data = jnp.asarray(DATA)
    per_obs = jax.vmap(jax.vmap(model.log_joint, in_axes=(None, None, 0)), in_axes=(None, 0, None))
    both = jax.jit(lambda p, x: (model.log_potentials(p, x), per_obs(p, x, jnp.arange(GMM_K))))
    fast, slow = (np.asarray(table) for table in both(params, data))
    np.testing.assert_allclose(fast, slow, rtol=1e-11, atol=1e-11)

    cov = full_covariances(kind, np.asarray(params.covariances), GMM_K, GMM_D)
    log_w = np.log(np.asarray(params.weights))
    reference = np.stack([log_w[k] + multivariate_normal(np.asarray(params.means[k]), cov[k]).logpdf(DATA)
                          for k in range(GMM_K)], axis=1)
    np.testing.assert_allclose(fast, reference, rtol=1e-11, atol=1e-11)

    # And scikit-learn's log-probabilities in its own parametrisation (precision Cholesky factors).
    chol = _compute_precision_cholesky(np.asarray(params.covariances), kind)
    sk = _estimate_log_gaussian_prob(DATA, np.asarray(params.means), chol, kind) + log_w
    np.testing.assert_allclose(fast, sk, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("kind", COVARIANCE_TYPES)
def test_m_step_matches_sklearn_estimator(kind):
    """One closed-form M-step (reg_covar = 1e-6) from random responsibilities equals sklearn's
    weighted MLE."""
    rng = np.random.default_rng(8)
    resp = rng.dirichlet(np.ones(GMM_K), size=GMM_N)
    params = jax.jit(MODELS[kind, 1e-6].from_responsibilities)(jnp.asarray(resp), jnp.asarray(DATA))
    counts, means, covariances = _estimate_gaussian_parameters(DATA, resp, 1e-6, kind)
    np.testing.assert_allclose(np.asarray(params.weights), counts / counts.sum(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(params.means), means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(params.covariances), covariances, rtol=1e-10, atol=1e-12)


INIT_METHODS = ("kmeans++", "kmeans", "random_from_data", "random")
NUM_KEYS = 6


@functools.cache
def _initialised():
    """Every init method vmapped over NUM_KEYS keys, and one un-vmapped kmeans++ call, in one
    compiled program (full covariances, the type where positive definiteness can fail). DATA is a
    numpy array closed over by the traced function, as a user would write it."""
    model = MODELS["full", 1e-6]
    keys = jax.random.split(jax.random.key(0), NUM_KEYS)

    @jax.jit
    def run(keys):
        batches = {method: jax.vmap(lambda key, method=method: model.init(key, DATA, method))(keys)
                   for method in INIT_METHODS}
        return batches, model.init(keys[-1], DATA, "kmeans++")

    return run(keys)


@pytest.mark.parametrize("method", INIT_METHODS)
def test_init_is_vmappable_over_keys_and_valid(method):
    batches, single = _initialised()
    batch = batches[method]
    weights = np.asarray(batch.weights)
    assert weights.shape == (NUM_KEYS, GMM_K)
    assert np.all(weights > 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
    means = np.asarray(batch.means)
    assert means.shape == (NUM_KEYS, GMM_K, GMM_D) and np.all(np.isfinite(means))
    # Means are convex combinations of data points: inside the data's bounding box.
    assert np.all(means >= DATA.min(axis=0) - 1e-9) and np.all(means <= DATA.max(axis=0) + 1e-9)
    cov = np.asarray(batch.covariances)
    assert cov.shape == (NUM_KEYS, GMM_K, GMM_D, GMM_D)
    np.testing.assert_allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-12, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    if method == "kmeans++":
        # The last member of the batch is the un-vmapped call with the same key.
        for a, b in zip(single, batch, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b)[-1], rtol=1e-12, atol=1e-12)
    # Different keys give different starting points (the key is used).
    assert len({m.round(8).tobytes() for m in means}) > 1
    # Valid starting points: the log-likelihood is finite.
    for i in range(NUM_KEYS):
        start = jax.tree_util.tree_map(lambda leaf, i=i: jnp.asarray(np.asarray(leaf)[i]), batch)
        assert np.isfinite(float(jitted(MODELS["full", 1e-6]).log_likelihood(start, jnp.asarray(DATA))))
