"""Degenerate fits stay finite and say what happened; convergence is reported honestly; results reproduce.

Every Gaussian-mixture fit here has the shapes of `tests/helpers.py` (N = 60, D = 2, K = 3, 40
iterations), so the compiled EM loops are shared with the other Gaussian-mixture tests. The references
are independent of jaxem: log-likelihoods and responsibilities from a float64 NumPy Gaussian density,
positive definiteness from NumPy's float64 Cholesky and eigenvalues, a NumPy EM loop for the
frozen-restart test, scikit-learn for convergence.

Tolerances (`rounding_tolerance`): jaxem's log-likelihood must match the reference at the returned
parameters to 50·eps of the dtype times the rounding scale of jaxem's log-potential table (a matrix
product of features about the data mean, whose terms cancel: about eps·(|x - mean| + |μ_k - mean|)²·
λ_max(Σ_k⁻¹) per entry). For ordinary data that is ~1e-13 (float64) and ~1e-5 (float32) of |ℓ|; it
is large only for a tight component far from the data mean. The objective may drop between iterations
by at most twice that tolerance (EM is monotone in exact arithmetic).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import GMM_D, GMM_K, GMM_MAX_ITER, GMM_N
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from scipy.linalg import solve_triangular
from scipy.special import logsumexp

import jaxem as em
from jaxem.engine.fit import DEFAULT_TOL
from jaxem.models import GaussianMixtureParams, gaussian_mixture

N, D, K, MAX_ITER = GMM_N, GMM_D, GMM_K, GMM_MAX_ITER
COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
MODELS = {kind: gaussian_mixture(K, kind) for kind in COVARIANCE_TYPES}
FULL = MODELS["full"]
DTYPES = (np.float32, np.float64)
REG = FULL.reg_covar


# --- independent references -----------------------------------------------------------------------


def full_covariances(kind, covariances):
    c = np.asarray(covariances, np.float64)
    if kind == "full":
        return c
    if kind == "tied":
        return np.broadcast_to(c, (K, D, D))
    if kind == "diag":
        return np.stack([np.diag(v) for v in c])
    return np.stack([v * np.eye(D) for v in c])


def gaussian_logpdf(x, mean, cov):
    """log N(x_n | mean, cov) for x (N, D), in float64 from NumPy's Cholesky factor (scipy's
    multivariate_normal refuses the ill-conditioned but positive definite matrices tested here)."""
    chol = np.linalg.cholesky(cov)
    y = solve_triangular(chol, (x - mean).T, lower=True)
    return -0.5 * np.sum(y * y, axis=0) - np.sum(np.log(np.diag(chol))) - 0.5 * len(mean) * np.log(2 * np.pi)


def reference_table(kind, params, x):
    """log w_k + log N(x_n | μ_k, Σ_k) in float64: (N, K)."""
    cov = full_covariances(kind, params.covariances)
    means = np.asarray(params.means, np.float64)
    weights = np.asarray(params.weights, np.float64)
    x = np.asarray(x, np.float64)
    return np.stack([np.log(weights[k]) + gaussian_logpdf(x, means[k], cov[k]) for k in range(len(weights))],
                    axis=1)


def reference_log_likelihood(kind, params, x):
    return float(np.sum(logsumexp(reference_table(kind, params, x), axis=1)))


def reference_responsibilities(kind, params, x):
    table = reference_table(kind, params, x)
    return np.exp(table - logsumexp(table, axis=1, keepdims=True))


def assert_positive_definite(kind, covariances):
    """float64 eigenvalues > 0, float64 Cholesky succeeds, and the correlation matrices' eigenvalues
    are > 0 (the scale-free version, which also holds for badly scaled features)."""
    cov = full_covariances(kind, covariances)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    np.linalg.cholesky(cov)
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    assert np.all(sd > 0)
    correlation = cov / (sd[:, :, None] * sd[:, None, :])
    assert np.all(np.linalg.eigvalsh(correlation) > 0)


def rounding_tolerance(kind, params, x, dtype):
    """How far jaxem's log-likelihood may sit from the reference value at the same parameters.

    jaxem's log-potential table is the matrix product Φ(x - c) @ η (c = the data mean): the terms
    -½uᵀΛu + uᵀΛm - ½mᵀΛm (u = x - c, m = μ_k - c) cancel, so an entry carries about
    eps·(|u| + |m|)²·λ_max(Λ_k) of rounding, small for ordinary data and large only for a tight
    component far from the data mean (an outlier with its own component). The tolerance is 50·eps
    times that scale (plus |φ|), weighted by the reference responsibilities and summed over points."""
    x = np.asarray(x, np.float64)
    centre = x.mean(axis=0)
    u = np.linalg.norm(x - centre, axis=1)
    m = np.linalg.norm(np.asarray(params.means, np.float64) - centre, axis=1)
    largest_precision = 1.0 / np.linalg.eigvalsh(full_covariances(kind, params.covariances))[:, 0]
    table = reference_table(kind, params, x)
    resp = np.exp(table - logsumexp(table, axis=1, keepdims=True))
    scale = np.sum(resp * ((u[:, None] + m[None, :]) ** 2 * largest_precision + np.abs(table)))
    return 50 * np.finfo(dtype).eps * scale


def assert_healthy(model, result, x, dtype, monotone=True):
    """finite=True and honest: finite parameters that pass the model's own checks, positive definite
    covariances, a log-likelihood equal to the reference at the returned parameters, a
    NaN-padded history that never decreases (`monotone`: reg_covar makes the M-step inexact, so EM
    is monotone only when reg_covar is negligible against the data's variances)."""
    kind = model.covariance_type
    assert bool(result.finite)
    leaves = jax.tree_util.tree_leaves(result.params)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves)
    assert all(np.asarray(leaf).dtype == dtype for leaf in leaves)
    model.check_params(result.params, x)
    assert_positive_definite(kind, result.params.covariances)
    ll = float(result.log_likelihood)
    reference = reference_log_likelihood(kind, result.params, x)
    tolerance = rounding_tolerance(kind, result.params, x, dtype)
    assert abs(ll - reference) <= tolerance, (ll, reference, tolerance)
    n = int(result.num_iters)
    history = np.asarray(result.history, np.float64)
    assert np.all(np.isfinite(history[:n])) and np.all(np.isnan(history[n:]))
    trajectory = np.append(history[:n], ll)
    drops = trajectory[:-1] - trajectory[1:]
    if monotone:
        assert np.all(drops <= 2 * tolerance + 1e-12 * np.abs(trajectory[1:])), (drops.max(), tolerance)


# --- degenerate data ------------------------------------------------------------------------------------


def two_clusters(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(N // 2, D)), rng.normal(size=(N // 2, D)) + 5.0])


def start(means, covariance=None, dtype=np.float64):
    """Equal weights, the given means, one covariance (D, D; default I) for every component."""
    covariances = np.broadcast_to(np.eye(D) if covariance is None else covariance, (K, D, D))
    return GaussianMixtureParams(np.full(K, 1.0 / K, dtype), np.asarray(means, dtype),
                                 np.asarray(covariances, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_component_that_loses_all_its_points(dtype):
    """A component started far from every point gets no responsibility: the fit stays finite and
    `degeneracy` flags exactly that component as having too few points, as the reference
    responsibilities confirm."""
    x = two_clusters().astype(dtype)
    result = em.fit(FULL, x, start([[0.0, 0.0], [5.0, 5.0], [1e3, 1e3]], dtype=dtype), max_iter=MAX_ITER)
    assert_healthy(FULL, result, x, dtype)
    degeneracy = FULL.degeneracy(result.params, x)
    expected_counts = reference_responsibilities("full", result.params, x).sum(axis=0)
    np.testing.assert_array_equal(degeneracy.few_points, expected_counts < D + 1)
    np.testing.assert_array_equal(degeneracy.few_points, [False, False, True])


@pytest.mark.parametrize("dtype", DTYPES)
def test_duplicate_points_collapse_a_variance_to_reg_covar(dtype):
    """Half the data is one repeated point: the component that takes them shrinks onto it; its
    covariance stays positive definite at about reg_covar·I and it is reported as singular."""
    rng = np.random.default_rng(1)
    x = np.concatenate([np.full((N // 2, D), 0.5), rng.normal(size=(N // 2, D)) * 2.0]).astype(dtype)
    result = em.fit(FULL, x, start([[0.5, 0.5], [2.0, 0.0], [-2.0, 0.0]], 0.5 * np.eye(D), dtype),
                    max_iter=MAX_ITER)
    assert_healthy(FULL, result, x, dtype)
    resp = reference_responsibilities("full", result.params, x)
    assert np.all(resp[: N // 2, 0] > 0.999)  # the duplicates belong to component 0
    np.testing.assert_allclose(np.asarray(result.params.means[0], np.float64), 0.5, atol=1e-5)
    smallest = np.linalg.eigvalsh(np.asarray(result.params.covariances[0], np.float64))
    assert np.all(smallest > 0) and smallest.max() < 100 * REG
    singular = np.asarray(FULL.degeneracy(result.params, x).singular)
    np.testing.assert_array_equal(singular, [True, False, False])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", COVARIANCE_TYPES)
def test_constant_column(kind, dtype):
    """A feature that never varies: every component's variance in it is reg_covar (spherical
    covariances pool the features, so there nothing collapses), and no component is reported
    degenerate for it (every solution shares that zero variance); the log-likelihood (large, from
    the tiny variance) is finite and correct."""
    model = MODELS[kind]
    x = two_clusters(2)
    x[:, 1] = 7.0
    x = x.astype(dtype)
    result = em.fit(model, x, model.init(jax.random.key(0), x), max_iter=MAX_ITER)
    assert_healthy(model, result, x, dtype)
    variances = np.diagonal(full_covariances(kind, result.params.covariances), axis1=-2, axis2=-1)
    # Not singular for it (a third component on two clusters may still die out and be flagged as
    # having too few points: 2.2 of 60 after the default rule's 40 iterations, full covariances).
    assert not np.asarray(model.degeneracy(result.params, x).singular).any()
    if kind == "spherical":
        assert np.all(variances > 2 * REG)
    else:
        np.testing.assert_allclose(variances[:, 1], REG, rtol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_outlier(dtype):
    """One point 10⁴ standard deviations out: the fit stays finite, positive definite and correct
    (whether the outlier gets a component of its own or not)."""
    x = two_clusters(3)
    x[0] = 1e4
    x = x.astype(dtype)
    result = em.fit(FULL, x, FULL.init(jax.random.key(1), x), max_iter=MAX_ITER)
    assert_healthy(FULL, result, x, dtype)


# --- property: finite results or a documented error, over shapes, dtypes and degenerate data ---------

PATTERNS = ("clusters", "constant_column", "duplicates", "outlier", "collinear", "identical",
            "two_values", "nan")


def degenerate_data(pattern, scale, offset, seed):
    rng = np.random.default_rng(seed)
    x = two_clusters(seed)
    if pattern == "constant_column":
        x[:, rng.integers(D)] = rng.normal()
    elif pattern == "duplicates":
        x[: rng.integers(K, N)] = x[0]
    elif pattern == "outlier":
        x[rng.integers(N)] = 1e4 * rng.choice([-1.0, 1.0], size=D)
    elif pattern == "collinear":
        x[:, 1] = 2.0 * x[:, 0] - 1.0
    elif pattern == "identical":
        x[:] = x[0]
    elif pattern == "two_values":
        x = np.where(rng.random((N, D)) < 0.5, 0.0, 1.0)
    elif pattern == "nan":
        x[rng.integers(N, size=2)] = np.nan
    return x * scale + offset


DATA_SETTINGS = dict(kind=st.sampled_from(COVARIANCE_TYPES), dtype=st.sampled_from(DTYPES),
                     pattern=st.sampled_from(PATTERNS), scale=st.sampled_from([1e-3, 1.0, 1e3]),
                     offset=st.sampled_from([0.0, 1e3]), seed=st.integers(0, 2**31 - 1))


OTHER_SHAPE = (9, 1, 2)
OTHER_MODEL = gaussian_mixture(OTHER_SHAPE[2])
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)  # a failure is reported as found, not shrunk


@settings(max_examples=30, deadline=None, phases=NO_SHRINK)
@given(**DATA_SETTINGS)
def test_entry_points_return_finite_results_or_raise_a_documented_error(kind, dtype, pattern, scale,
                                                                        offset, seed):
    """model.init, model.log_likelihood, model.e_step and fit on degenerate data, float32 and
    float64, all four covariance types: valid finite output (checked against the reference), or, for data
    with NaN, the documented ValueError naming `data` from every entry point."""
    model = MODELS[kind]
    x = degenerate_data(pattern, scale, offset, seed).astype(dtype)
    key = jax.random.key(seed % 1000)
    if pattern == "nan":
        params = model.init(jax.random.key(0), np.nan_to_num(x))
        for call in (lambda: model.init(key, x), lambda: model.log_likelihood(params, x),
                     lambda: model.e_step(params, x), lambda: em.fit(model, x, params)):
            with pytest.raises(ValueError, match="^data: contains NaN"):
                call()
        return
    params0 = model.init(key, x)
    model.check_params(params0, x)
    assert_positive_definite(kind, params0.covariances)
    ll0 = model.log_likelihood(params0, x)
    posterior = model.e_step(params0, x)
    marginals = np.asarray(posterior.marginals, np.float64)
    assert np.all(np.isfinite(marginals)) and np.isfinite(float(ll0))
    np.testing.assert_allclose(marginals.sum(axis=1), 1.0, rtol=0, atol=1e-5)
    assert float(posterior.log_likelihood) == float(ll0)
    result = em.fit(model, x, params0, max_iter=MAX_ITER)
    assert_healthy(model, result, x, dtype, monotone=scale >= 1.0)


@settings(max_examples=6, deadline=None, phases=NO_SHRINK)
@given(pattern=st.sampled_from(PATTERNS[:-1]), seed=st.integers(0, 2**31 - 1))
def test_another_shape_with_one_feature(pattern, seed):
    """The same property on another shape: N = 9 points with a single feature (D = 1), K = 2, in
    float32 (one more shape and dtype only: each compiles its own programs)."""
    dtype = np.float32
    n, dim, k = OTHER_SHAPE
    model = OTHER_MODEL
    x = degenerate_data(pattern, 1.0, 0.0, seed)
    x = np.resize(x, (n, dim)).astype(dtype)  # the same patterns, cut or tiled to (n, dim)
    params0 = model.init(jax.random.key(seed % 1000), x)
    model.check_params(params0, x)
    result = em.fit(model, x, params0, max_iter=MAX_ITER)
    assert_healthy(model, result, x, dtype)


RESTART_KEYS = jax.random.split(jax.random.key(7), 6)


def stacked_inits(x):
    """Restart starting points: single `init` calls stacked (the same compiled init as above)."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *[FULL.init(k, x) for k in RESTART_KEYS])


@settings(max_examples=8, deadline=None, phases=NO_SHRINK)
@given(**{**DATA_SETTINGS, "kind": st.just("full"), "dtype": st.just(np.float32),
          "pattern": st.sampled_from(PATTERNS[:-1])})
def test_fit_restarts_on_degenerate_data_picks_the_best_finite_restart(kind, dtype, pattern, scale,
                                                                       offset, seed):
    """float32 only (the fragile dtype; one compiled restart program): every restart finite, the best
    one is the argmax of the objectives among the non-degenerate restarts (all of them if every one
    is degenerate) and passes every check."""
    x = degenerate_data(pattern, scale, offset, seed).astype(dtype)
    starts = stacked_inits(x)
    result = em.fit_restarts(FULL, x, starts, max_iter=MAX_ITER, strategy="emem", num_refine=2)
    restarts = result.restarts
    lls = np.asarray(restarts.log_likelihood, np.float64)
    finite = np.asarray(restarts.finite)
    assert finite.all() and np.all(np.isfinite(lls))
    # (Seed 45381, constant column at scale 1e-3: restart 5 has the highest ℓ and is degenerate
    # once fitted to the default rule; scikit-learn's rule had stopped it below restart 0.)
    eligible = finite & ~np.asarray(result.degenerate) if np.any(~np.asarray(result.degenerate)) else finite
    assert int(result.best_index) == int(np.argmax(np.where(eligible, lls, -np.inf)))
    assert_healthy(FULL, result.best, x, dtype, monotone=scale >= 1.0)


# --- a float32 restart that goes non-finite is frozen, reported, and never best -----------------------


def fused_log_joint(params, x, z):
    """Equal weights, unit variances: log(1/K) + log N(x | loc[z], 1)."""
    return em.distributions.normal_logpdf(x, params["loc"][z], 1.0) - jnp.log(float(K))


def fused_maximize(posterior, data, params):
    """The exact M-step for `loc`; once the fuse has burnt down (fuse < 1) it returns NaN."""
    r = posterior.marginals
    loc = r.T @ data / jnp.sum(r, axis=0)
    fuse = params["fuse"] - 1
    return {"loc": jnp.where(fuse < 0, jnp.nan, loc), "fuse": fuse}


FUSED = em.Mixture(fused_log_joint, K, m_step=em.ClosedForm(fused_maximize))


def numpy_fused_em(x, loc, steps):
    """(loc after each of `steps` M-steps, ℓ at each iterate 0..steps), float64, loops in NumPy."""
    x = np.asarray(x, np.float64)
    locs, lls = [np.asarray(loc, np.float64)], []
    for _ in range(steps + 1):
        table = -0.5 * (x[:, None] - locs[-1]) ** 2 - 0.5 * np.log(2 * np.pi) - np.log(K)
        lls.append(float(np.sum(logsumexp(table, axis=1))))
        r = np.exp(table - logsumexp(table, axis=1, keepdims=True))
        locs.append(r.T @ x / r.sum(axis=0))
    return locs[:-1], lls


def test_float32_restart_that_goes_non_finite_is_frozen_and_never_best():
    """Restart 0 starts at the best point of all but its 4th M-step returns NaN: it must stop at its
    3rd iterate (equal to a NumPy EM loop), report finite=False, and not be chosen although its
    objective is the highest; restart 1 runs normally (to a poor fixed point) and is best."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(-4, 1, 20), rng.normal(0, 1, 20), rng.normal(4, 1, 20)]).astype(np.float32)
    optimum = numpy_fused_em(x, [-4.0, 0.0, 4.0], 50)[0][-1]
    loc0 = [optimum + 0.2, np.zeros(K)]  # restart 1: equal means, a fixed point EM cannot leave
    starts = {"loc": np.stack(loc0).astype(np.float32), "fuse": np.array([3.0, 1e9], np.float32)}
    result = em.fit_restarts(FUSED, x, starts, max_iter=MAX_ITER, tol=0.0, strategy="emem", explore_iters=5,
                             num_refine=1)
    restarts = result.restarts
    assert list(np.asarray(restarts.finite)) == [False, True]
    assert int(restarts.num_iters[0]) == 3 and not bool(restarts.converged[0])
    locs, lls = numpy_fused_em(x, loc0[0], 3)
    np.testing.assert_allclose(np.asarray(restarts.params["loc"][0]), locs[3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(restarts.history[0, :3]), lls[:3], rtol=1e-6)
    assert np.all(np.isnan(np.asarray(restarts.history[0, 3:])))
    np.testing.assert_allclose(float(restarts.log_likelihood[0]), lls[3], rtol=1e-6)
    assert float(restarts.log_likelihood[0]) > float(restarts.log_likelihood[1])  # it would win on value
    assert int(result.best_index) == 1 and bool(result.best.finite)
    alone = em.fit(FUSED, x, jax.tree_util.tree_map(lambda a: a[0], starts), max_iter=MAX_ITER, tol=0.0)
    assert not bool(alone.finite) and int(alone.num_iters) == 3
    np.testing.assert_allclose(np.asarray(alone.params["loc"]), locs[3], rtol=1e-5, atol=1e-5)


# --- convergence honesty --------------------------------------------------------------------------------


def overlapping_data():
    rng = np.random.default_rng(5)
    return np.concatenate([rng.normal(size=(N // 2, D)), rng.normal(size=(N // 2, D)) + 1.0])


OVERLAPPING = overlapping_data()
OVERLAPPING_START = start([[0.0, 0.0], [1.0, 1.0], [0.5, 0.0]])


def test_converged_is_false_when_max_iter_is_hit():
    """With a tolerance the fit cannot reach in MAX_ITER steps, every step is taken, converged is
    False, and the last change (from the returned history) is indeed above tol·N; scikit-learn,
    started from the same parameters, agrees that it has not converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    tol = 1e-12
    result = em.fit(FULL, OVERLAPPING, OVERLAPPING_START, max_iter=MAX_ITER, tol=tol, convergence="absolute")
    assert int(result.num_iters) == MAX_ITER and not bool(result.converged) and bool(result.finite)
    last_change = abs(float(result.log_likelihood) - float(result.history[-1]))
    assert last_change >= tol * N
    reference = GaussianMixture(K, max_iter=MAX_ITER, tol=tol, weights_init=OVERLAPPING_START.weights,
                                means_init=OVERLAPPING_START.means,
                                precisions_init=np.linalg.inv(OVERLAPPING_START.covariances))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reference.fit(OVERLAPPING)
    assert not reference.converged_ and reference.n_iter_ == MAX_ITER
    assert any(issubclass(w.category, ConvergenceWarning) for w in caught)


def test_converged_is_true_only_when_the_change_drops_below_tol():
    """The control: with scikit-learn's rule at its default tolerance the fit stops early,
    converged is True, the last change is below tol·N and no earlier change was (recomputed from
    the history; the default relative rule: tests/test_stop_rule.py)."""
    result = em.fit(FULL, OVERLAPPING, OVERLAPPING_START, max_iter=MAX_ITER, convergence="absolute")
    n = int(result.num_iters)
    assert bool(result.converged) and 1 <= n < MAX_ITER
    trajectory = np.append(np.asarray(result.history[:n]), float(result.log_likelihood))
    changes = np.abs(np.diff(trajectory))
    assert changes[-1] < DEFAULT_TOL * N
    assert np.all(changes[:-1] >= DEFAULT_TOL * N)


# --- reproducibility and the caller's arrays ------------------------------------------------------------


def assert_bitwise_equal(a, b):
    for left, right in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        left, right = np.asarray(left), np.asarray(right)
        assert left.dtype == right.dtype and left.shape == right.shape
        assert left.tobytes() == right.tobytes()


def _fit_full(x, params0):
    return em.fit(FULL, x, params0, max_iter=MAX_ITER)


OUTER_JIT_FIT = jax.jit(_fit_full)


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_key_and_inputs_give_bit_identical_results(dtype):
    """Across calls and with or without an outer jax.jit: init, fit and fit_restarts reproduce bit
    for bit; a different key gives a different start (so the comparison can fail)."""
    x = two_clusters(6).astype(dtype)
    key = jax.random.key(42)
    params0 = FULL.init(key, x)
    assert_bitwise_equal(params0, FULL.init(key, x))
    assert np.asarray(FULL.init(jax.random.key(43), x).means).tobytes() != np.asarray(params0.means).tobytes()
    first = em.fit(FULL, x, params0, max_iter=MAX_ITER)
    assert_bitwise_equal(first, em.fit(FULL, x, params0, max_iter=MAX_ITER))
    assert_bitwise_equal(first, OUTER_JIT_FIT(x, params0))
    if dtype == np.float32:  # the restart program compiled by the float32 property test above
        starts = stacked_inits(x)
        restarts = em.fit_restarts(FULL, x, starts, max_iter=MAX_ITER, strategy="emem", num_refine=2)
        again = em.fit_restarts(FULL, x, starts, max_iter=MAX_ITER, strategy="emem", num_refine=2)
        assert_bitwise_equal(restarts, again)


def test_under_an_outer_jit_nan_data_cannot_be_checked_and_is_reported():
    """Documented limit: inside jit the data's values are unknown to Python, so NaN rows are not
    refused; the loop then reports finite=False, takes no step and returns the finite params0."""
    x = two_clusters(6)
    params0 = FULL.init(jax.random.key(42), x)
    x[3, 0] = np.nan
    result = OUTER_JIT_FIT(x, params0)
    assert not bool(result.finite) and int(result.num_iters) == 0 and not bool(result.converged)
    assert_bitwise_equal(result.params, params0)


def test_fitting_never_modifies_the_callers_arrays():
    """NumPy inputs (data and every parameter leaf) are unchanged, bit for bit and in their flags,
    after every entry point has used them (float32: the programs compiled above)."""
    x = two_clusters(6).astype(np.float32)
    params0 = GaussianMixtureParams(*(np.array(leaf) for leaf in FULL.init(jax.random.key(42), x)))
    starts = GaussianMixtureParams(*(np.stack([leaf] * len(RESTART_KEYS)) for leaf in params0))
    arrays = [x, *params0, *starts]
    before = [(a.copy(), a.flags.writeable) for a in arrays]
    FULL.init(jax.random.key(0), x)
    FULL.log_likelihood(params0, x)
    FULL.e_step(params0, x)
    em.fit(FULL, x, params0, max_iter=MAX_ITER)
    OUTER_JIT_FIT(x, params0)
    em.fit_restarts(FULL, x, starts, max_iter=MAX_ITER, strategy="emem", num_refine=2)
    for array, (copy, writeable) in zip(arrays, before, strict=True):
        assert array.tobytes() == copy.tobytes() and array.flags.writeable == writeable
