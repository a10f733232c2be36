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
from helpers import GMM_MAX_ITER, clustered_data, full_covariances, random_gmm_params
from hypothesis import given, settings
from hypothesis import strategies as st
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


# --- which float32 path: the feature product where it keeps its digits, else the centred one ----
# `GaussianFamily.features_are_precise`: the product Φ(u) @ η when eps32·κ <= 1e-3, with
# κ = mean_n |u_n|²·max_k tr(Σ_k⁻¹) (u = x - the data mean); computed here in NumPy float64.

EPS32 = float(np.finfo(np.float32).eps)


def numpy_kappa(params, x, kind, k=K):
    x = np.asarray(x, np.float64)
    dim = x.shape[1]
    covariances = full_covariances(kind, np.asarray(params.covariances, np.float64), k, dim)
    spread = np.mean(np.sum((x - x.mean(axis=0)) ** 2, axis=1))
    return spread * max(np.trace(np.linalg.inv(c)) for c in covariances)


def numpy_table(params, x, kind, k=K):
    """float64 [log N(x_n | μ_k, Σ_k)]_{n,k} from NumPy's Cholesky."""
    x = np.asarray(x, np.float64)
    dim = x.shape[1]
    covariances = full_covariances(kind, np.asarray(params.covariances, np.float64), k, dim)
    means = np.asarray(params.means, np.float64)
    columns = []
    for mean, cov in zip(means, covariances, strict=True):
        chol = np.linalg.cholesky(cov)
        y = np.linalg.solve(chol, (x - mean).T)
        columns.append(-0.5 * np.sum(y * y, axis=0) - np.sum(np.log(np.diag(chol)))
                       - 0.5 * dim * np.log(2 * np.pi))
    return np.stack(columns, axis=1)


def spread_out(seed, kind, scale=1.0, n=200, dim=3):
    """Data from 4 unit clusters 3 apart, and random parameters with covariances × `scale`."""
    rng = np.random.default_rng(seed)
    x = clustered_data(rng, 4, n, dim, separation=3.0)
    params = random_gmm_params(rng, kind, 4, dim, data=x)
    params = params._replace(covariances=params.covariances * scale)
    return x.astype(np.float32), as_float32(params)


@pytest.mark.parametrize("kind", list(MODELS))
def test_float32_takes_the_feature_product_only_where_it_keeps_its_digits(kind):
    family = MODELS[kind].family
    fitted = as_float32(em.fit(MODELS[kind], X64, MODELS[kind].init(jax.random.key(0), X64),
                               max_iter=GMM_MAX_ITER).params)
    u = X32 - X32.mean(axis=0)
    assert EPS32 * numpy_kappa(fitted, X32, kind) > 1e-2   # tight clusters: κ ~ 1e6
    assert not bool(family.features_are_precise(u, fitted.covariances))
    x, params = spread_out(0, kind)
    assert EPS32 * numpy_kappa(params, x, kind, 4) < 1e-4
    assert bool(family.features_are_precise(x - x.mean(axis=0), params.covariances))
    fitted64 = np.asarray(fitted.covariances, np.float64)
    assert family.features_are_precise(X64 - X64.mean(axis=0), fitted64) is True   # float64: always


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(list(MODELS)), st.sampled_from([1e-4, 3e-3, 1.0]))
def test_float32_table_and_m_step_keep_their_digits_on_either_path(seed, kind, scale):
    """On random models and data, whichever path is taken: each table entry within
    10·eps32·(|u_n|² + |m_k|²)·tr(Σ_k⁻¹) + 1e-6·|entry| of NumPy's float64 value (the bound of
    the feature product; the centred path keeps 1e-6 relative), and one M-step's covariances
    within 10·eps32·E_k[|u|²] (the product) + 1e-4 relative of the float64 M-step from the same
    responsibilities."""
    x, params = spread_out(seed, kind, scale)
    model = em.models.gaussian_mixture(4, kind)
    family = model.family
    precise = bool(family.features_are_precise(x - x.mean(axis=0), params.covariances))
    assert precise == (EPS32 * numpy_kappa(params, x, kind, 4) <= 1e-3)
    table = np.asarray(family.log_density_table(x, params.means, params.covariances), np.float64)
    reference = numpy_table(params, x, kind, 4)
    x64 = np.asarray(x, np.float64)
    u2 = np.sum((x64 - x64.mean(axis=0)) ** 2, axis=1)
    m2 = np.sum((np.asarray(params.means, np.float64) - x64.mean(axis=0)) ** 2, axis=1)
    covariances = full_covariances(kind, np.asarray(params.covariances, np.float64), 4, x.shape[1])
    inverse_traces = np.array([np.trace(np.linalg.inv(c)) for c in covariances])
    bound = 10 * EPS32 * (u2[:, None] + m2[None]) * inverse_traces[None] + 1e-6 * np.abs(reference) + 1e-6
    assert np.all(np.abs(table - reference) <= bound)

    posterior = model.e_step(params, x)
    params64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    resp64 = np.asarray(posterior.marginals, np.float64)
    posterior64 = posterior._replace(marginals=resp64)
    one = model.maximize(model.statistics(posterior, x, params), params)
    expected = model.maximize(model.statistics(posterior64, x64, params64), params64)
    got = full_covariances(kind, np.asarray(one.covariances, np.float64), 4, x.shape[1])
    want = full_covariances(kind, np.asarray(expected.covariances), 4, x.shape[1])
    # The product: absolute errors of about eps·E_k[|u|²] (the component's mean square about
    # the data mean, under its responsibilities); centred: 1e-4 relative.
    mean_square = resp64.T @ u2 / resp64.sum(axis=0)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        scale_k = np.sqrt(np.outer(np.diag(w), np.diag(w)))
        if kind == "tied":
            allowed = 10 * EPS32 * np.max(mean_square) + 1e-4 * scale_k
        else:
            allowed = (10 * EPS32 * mean_square[k] if precise else 0.0) + 1e-4 * scale_k
        assert np.all(np.abs(g - w) <= allowed)


def test_vmapped_float32_tables_take_one_branch_for_the_whole_batch():
    """Under vmap the decision is ONE bool for the batch (`jaxem.tree.all_across_batch`): the
    program holds a cond, not a select of both paths, and a batch holding one ill-conditioned
    member computes every member on the centred path, so that member keeps its digits."""
    family = MODELS["full"].family
    tight = as_float32(em.fit(MODELS["full"], X64, MODELS["full"].init(jax.random.key(0), X64),
                              max_iter=GMM_MAX_ITER).params)
    loose = tight._replace(covariances=np.broadcast_to(np.eye(D, dtype=np.float32), (K, D, D)))
    batch = jax.tree_util.tree_map(lambda a, b: np.stack([a, b]), loose, tight)
    table = jax.vmap(lambda p: family.log_density_table(X32, p.means, p.covariances))
    assert "cond[" in str(jax.make_jaxpr(table)(batch))
    together = np.asarray(table(batch), np.float64)
    for i, params in enumerate((loose, tight)):
        reference = numpy_table(params, X32, "full")
        assert np.all(np.abs(together[i] - reference) <= TOLERANCE / 10 + 1e-6 * np.abs(reference))
    alone = [bool(family.features_are_precise(X32 - X32.mean(axis=0), p.covariances)) for p in (loose, tight)]
    assert alone == [True, False]
    flags = jax.vmap(lambda p: family.features_are_precise(X32 - X32.mean(axis=0), p.covariances))(batch)
    assert np.asarray(flags).tolist() == [False, False]   # one decision, broadcast to the batch
