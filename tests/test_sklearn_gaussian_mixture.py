"""jaxem.sklearn.GaussianMixture against scikit-learn's GaussianMixture: the same trajectory from the
same starting parameters (all four covariance types, 1e-6), the same exceptions for the same misuse,
ConvergenceWarning, vmapped restarts, warm starts, sampling, pickling, and scikit-learn's own
`check_estimator` suite.

Compiles are shared: every comparison uses data of N_TRAIN rows and D features, K components, the
default max_iter, and held-out data of N_TEST rows (scored in the same padded shape as N_TRAIN).
"""

import pickle
import warnings

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import mixture
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from jaxem import DegenerateSolutionWarning
from jaxem.sklearn import GaussianMixture
from jaxem.sklearn import gaussian_mixture as gm_module

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
K, D, N_TRAIN, N_TEST = 3, 2, 60, 40
TIGHT = 1e-6


def clustered(rng, n):
    """n points around three well separated centres with different shapes."""
    centres = np.array([[0.0, 0.0], [6.0, 1.0], [2.0, 7.0]])
    shapes = np.array([[[1.0, 0.3], [0.0, 0.8]], [[0.6, 0.0], [0.4, 1.5]], [[1.2, -0.5], [0.0, 0.5]]])
    labels = np.arange(n) % K
    return centres[labels] + np.einsum("nij,nj->ni", shapes[labels], rng.normal(size=(n, D)))


X_TRAIN = clustered(np.random.default_rng(0), N_TRAIN)
X_TEST = clustered(np.random.default_rng(1), N_TEST)
X_UNIFORM = np.random.default_rng(2).uniform(size=(N_TRAIN, D))   # no clusters: restarts disagree


def random_start(rng, covariance_type, data):
    """Random weights (summing to 1), means near data points and SPD precisions of the given type."""
    weights = rng.dirichlet(np.full(K, 3.0))
    means = data[rng.choice(len(data), K, replace=False)] + 0.3 * rng.normal(size=(K, D))
    if covariance_type in ("full", "tied"):
        count = K if covariance_type == "full" else 1
        a = rng.normal(size=(count, D, D))
        precisions = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(D)
        precisions = precisions if covariance_type == "full" else precisions[0]
    else:
        precisions = rng.uniform(0.3, 2.0, size=(K, D) if covariance_type == "diag" else K)
    return {"weights_init": weights, "means_init": means, "precisions_init": precisions}


def assert_same_fit(ours, reference, data_sets=(X_TRAIN, X_TEST)):
    """Every fitted attribute and every method's output agree to TIGHT."""
    close = dict(rtol=TIGHT, atol=TIGHT)
    assert ours.n_iter_ == reference.n_iter_
    assert ours.converged_ == reference.converged_
    assert ours.n_features_in_ == reference.n_features_in_
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        # Scaled to the array: a component collapsed onto one point has precisions ~ 1/reg_covar.
        expected = getattr(reference, name)
        np.testing.assert_allclose(getattr(ours, name), expected, rtol=TIGHT,
                                   atol=TIGHT * max(1.0, np.abs(expected).max()), err_msg=name)
        assert getattr(ours, name).shape == getattr(reference, name).shape, name
    assert len(ours.lower_bounds_) == len(reference.lower_bounds_)
    np.testing.assert_allclose(ours.lower_bounds_, reference.lower_bounds_, **close)
    np.testing.assert_allclose(ours.lower_bound_, reference.lower_bound_, **close)
    for data in data_sets:
        np.testing.assert_allclose(ours.score_samples(data), reference.score_samples(data), **close)
        np.testing.assert_allclose(ours.predict_proba(data), reference.predict_proba(data), **close)
        np.testing.assert_array_equal(ours.predict(data), reference.predict(data))
        np.testing.assert_allclose(ours.score(data), reference.score(data), **close)
        np.testing.assert_allclose(ours.bic(data), reference.bic(data), **close)
        np.testing.assert_allclose(ours.aic(data), reference.aic(data), **close)


def fit_both(settings_, data=X_TRAIN):
    """(ours, scikit-learn's) fitted with the same settings; ConvergenceWarnings are recorded."""
    with warnings.catch_warnings(record=True) as ours_warnings:
        warnings.simplefilter("always")
        ours = GaussianMixture(**settings_).fit(data)
    with warnings.catch_warnings(record=True) as reference_warnings:
        warnings.simplefilter("always")
        reference = mixture.GaussianMixture(**settings_).fit(data)
    def converge_warnings(record):
        return [w for w in record if issubclass(w.category, ConvergenceWarning)]
    return ours, reference, converge_warnings(ours_warnings), converge_warnings(reference_warnings)


# ------------------------------------------------------------------------------------------------
# scikit-learn's own estimator checks
# ------------------------------------------------------------------------------------------------

@parametrize_with_checks([GaussianMixture()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------------------------------
# The same trajectory as scikit-learn from the same starting parameters
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_sklearn_from_the_same_start(covariance_type):
    start = random_start(np.random.default_rng(2), covariance_type, X_TRAIN)
    ours, reference, ours_w, reference_w = fit_both(
        dict(n_components=K, covariance_type=covariance_type, tol=1e-8, **start))
    assert reference.converged_ and reference.n_iter_ > 3   # a real trajectory, not one step
    assert not ours_w and not reference_w
    assert_same_fit(ours, reference)
    np.testing.assert_array_equal(ours.fit_predict(X_TRAIN), reference.fit_predict(X_TRAIN))
    # One restart: its final lower bound is lower_bound_.
    assert ours.restart_log_likelihoods_.shape == (1,)
    np.testing.assert_allclose(ours.restart_log_likelihoods_[0], reference.lower_bound_, rtol=TIGHT)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), covariance_type=st.sampled_from(COVARIANCE_TYPES),
       tol=st.sampled_from([1e-3, 1e-6]))
def test_matches_sklearn_on_random_data_and_starts(seed, covariance_type, tol):
    rng = np.random.default_rng(seed)
    data = clustered(rng, N_TRAIN) * rng.uniform(0.5, 3.0) + rng.normal(scale=5.0, size=D)
    start = random_start(rng, covariance_type, data)
    ours, reference, ours_w, reference_w = fit_both(
        dict(n_components=K, covariance_type=covariance_type, tol=tol, **start), data)
    assert len(ours_w) == len(reference_w)
    assert_same_fit(ours, reference, data_sets=(data,))


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_convergence_warning_when_max_iter_is_reached(covariance_type):
    """tol=0 can never be met: both run all max_iter iterations and warn; trajectories still agree."""
    start = random_start(np.random.default_rng(3), covariance_type, X_TRAIN)
    ours, reference, ours_w, reference_w = fit_both(
        dict(n_components=K, covariance_type=covariance_type, tol=0.0, **start))
    assert len(ours_w) == 1 and len(reference_w) == 1
    assert not ours.converged_ and ours.n_iter_ == ours.max_iter == 100
    assert_same_fit(ours, reference, data_sets=(X_TEST,))


# ------------------------------------------------------------------------------------------------
# Restarts: one vmapped program, every restart's log-likelihood
# ------------------------------------------------------------------------------------------------

def test_restarts_run_as_one_program_and_match_sklearn_per_restart(monkeypatch):
    """n_init restarts: one call of one compiled program with a restart axis of n_init; every
    restart's final lower bound equals scikit-learn's fit from that restart's starting point, and
    the estimator is scikit-learn's fit from the best one."""
    n_init = 5
    calls = []
    program = gm_module._fit_program

    def recording_program(model, x, num_restarts, *args):
        outputs = program(model, x, num_restarts, *args)
        calls.append(((num_restarts,), outputs[0]))   # outputs[0]: the starting points it drew
        return outputs

    monkeypatch.setattr(gm_module, "_fit_program", recording_program)
    ours = GaussianMixture(K, covariance_type="diag", n_init=n_init, init_params="random",
                           random_state=7).fit(X_UNIFORM)
    assert len(calls) == 1 and calls[0][0] == (n_init,)
    assert ours.restart_log_likelihoods_.shape == (n_init,)
    starts = [np.asarray(leaf) for leaf in calls[0][1]]
    assert all(leaf.shape[0] == n_init for leaf in starts)
    weights, means, covariances = starts
    references = [
        mixture.GaussianMixture(K, covariance_type="diag", weights_init=weights[r] / weights[r].sum(),
                                means_init=means[r], precisions_init=1.0 / covariances[r]).fit(X_UNIFORM)
        for r in range(n_init)
    ]
    expected = np.array([reference.lower_bound_ for reference in references])
    np.testing.assert_allclose(ours.restart_log_likelihoods_, expected, rtol=TIGHT, atol=TIGHT)
    assert np.ptp(expected) > 1e-3   # the restarts really end in different optima
    assert ours.lower_bound_ == ours.restart_log_likelihoods_.max()
    assert_same_fit(ours, references[int(np.argmax(expected))], data_sets=(X_UNIFORM,))


@pytest.mark.parametrize("init_params", ["k-means++", "random_from_data"])
def test_seed_point_initialisations_follow_sklearn_definition(init_params):
    """scikit-learn starts each component from one data point: mean = that point, covariance =
    reg_covar, weight n_k / N = (1 + 10 eps) / N; max_iter=0 returns that starting point."""
    reg_covar = 1e-4
    ours = GaussianMixture(K, covariance_type="diag", init_params=init_params, max_iter=0,
                           reg_covar=reg_covar, random_state=0).fit(X_TRAIN)
    rows = [np.flatnonzero(np.max(np.abs(X_TRAIN - mean), axis=1) < 1e-12) for mean in ours.means_]
    assert all(len(r) == 1 for r in rows) and len({int(r[0]) for r in rows}) == K
    np.testing.assert_allclose(ours.covariances_, np.full((K, D), reg_covar), rtol=1e-6)
    np.testing.assert_allclose(ours.weights_, np.full(K, (1 + 10 * np.finfo(float).eps) / N_TRAIN))
    assert ours.n_iter_ == 0 and ours.lower_bound_ == -np.inf and ours.lower_bounds_ == []
    assert not ours.converged_


def test_max_iter_zero_returns_the_given_start_without_warning():
    start = random_start(np.random.default_rng(4), "full", X_TRAIN)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ours = GaussianMixture(K, max_iter=0, **start).fit(X_TRAIN)
    np.testing.assert_allclose(ours.weights_, start["weights_init"])
    np.testing.assert_allclose(ours.means_, start["means_init"])
    np.testing.assert_allclose(ours.precisions_, start["precisions_init"], rtol=1e-10)


# ------------------------------------------------------------------------------------------------
# Warm start
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("first_tol, second_tol, met_at_once", [(1e-3, 1e-3, True), (1e-1, 1e-8, False)])
def test_warm_start_matches_sklearn(first_tol, second_tol, met_at_once):
    """Fit, then refit warm: the refit's first convergence test compares the start with the previous
    lower_bound_, so it may be met at once (one iteration) or the fit continues; both as scikit-learn."""
    start = random_start(np.random.default_rng(5), "spherical", X_TRAIN)
    settings_ = dict(n_components=K, covariance_type="spherical", tol=first_tol, warm_start=True, **start)
    ours, reference = GaussianMixture(**settings_), mixture.GaussianMixture(**settings_)
    ours.fit(X_TRAIN)
    reference.fit(X_TRAIN)
    assert_same_fit(ours, reference, data_sets=())
    ours.set_params(tol=second_tol).fit(X_TRAIN)
    reference.set_params(tol=second_tol).fit(X_TRAIN)
    assert (reference.n_iter_ == 1) == met_at_once
    assert_same_fit(ours, reference, data_sets=(X_TEST,))


# ------------------------------------------------------------------------------------------------
# The same exceptions for the same misuse
# ------------------------------------------------------------------------------------------------

def raised(fn):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the test compares exception types
        return error
    raise AssertionError("no exception raised")


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score", "bic", "aic"])
def test_not_fitted(method):
    for estimator in (GaussianMixture(K), mixture.GaussianMixture(K)):
        assert isinstance(raised(lambda e=estimator: getattr(e, method)(X_TEST)), NotFittedError)
    assert isinstance(raised(lambda: GaussianMixture(K).sample(3)), NotFittedError)


FITTED = {}


def fitted_pair():
    if not FITTED:
        start = random_start(np.random.default_rng(6), "full", X_TRAIN)
        FITTED["pair"] = (GaussianMixture(K, random_state=0, **start).fit(X_TRAIN),
                          mixture.GaussianMixture(K, random_state=0, **start).fit(X_TRAIN))
    return FITTED["pair"]


MISUSE = {
    "wrong n_features": lambda cls: fitted_pair()[cls is mixture.GaussianMixture].predict(
        np.ones((5, D + 1))),
    "1-D input": lambda cls: fitted_pair()[cls is mixture.GaussianMixture].score_samples(np.ones(5)),
    "n_components > n_samples": lambda cls: cls(K + 5).fit(X_TRAIN[: K + 2]),
    "bad covariance_type": lambda cls: cls(K, covariance_type="banana").fit(X_TRAIN),
    "bad init_params": lambda cls: cls(K, init_params="nope").fit(X_TRAIN),
    "negative tol": lambda cls: cls(K, tol=-1.0).fit(X_TRAIN),
    "n_init 0": lambda cls: cls(K, n_init=0).fit(X_TRAIN),
    "weights_init wrong shape": lambda cls: cls(K, weights_init=np.ones(K + 1) / (K + 1)).fit(X_TRAIN),
    "weights_init not normalised": lambda cls: cls(K, weights_init=np.full(K, 0.5)).fit(X_TRAIN),
    "means_init wrong shape": lambda cls: cls(K, means_init=np.zeros((K, D + 1))).fit(X_TRAIN),
    "precisions_init not SPD": lambda cls: cls(K, covariance_type="tied",
                                               precisions_init=-np.eye(D)).fit(X_TRAIN),
    "NaN in X": lambda cls: cls(K).fit(np.where(np.arange(N_TRAIN)[:, None] == 3, np.nan, X_TRAIN)),
    "one sample": lambda cls: cls(1).fit(X_TRAIN[:1]),
    "sample(0)": lambda cls: fitted_pair()[cls is mixture.GaussianMixture].sample(0),
}


@pytest.mark.parametrize("misuse", sorted(MISUSE))
def test_same_exception_type_as_sklearn(misuse):
    ours = raised(lambda: MISUSE[misuse](GaussianMixture))
    reference = raised(lambda: MISUSE[misuse](mixture.GaussianMixture))
    assert isinstance(reference, ValueError), reference
    assert isinstance(ours, ValueError), ours


# ------------------------------------------------------------------------------------------------
# Sampling, pickling, verbose output, float64 without the global flag
# ------------------------------------------------------------------------------------------------

def test_sample_is_grouped_by_component_and_follows_the_mixture():
    ours, _ = fitted_pair()
    n = 3000
    x, y = ours.sample(n)
    assert x.shape == (n, D) and x.dtype == np.float64 and y.shape == (n,)
    assert np.all(np.diff(y) >= 0)   # grouped by component, as scikit-learn returns them
    x_again, _ = ours.sample(n)
    np.testing.assert_array_equal(x, x_again)   # an int random_state makes sample reproducible
    counts = np.bincount(y, minlength=K)
    # Binomial counts within 5 standard deviations of n w_k; component means and covariances
    # within 5 standard errors (Var of a sample covariance entry ≈ (σ_ii σ_jj + σ_ij²) / n).
    sd = np.sqrt(n * ours.weights_ * (1 - ours.weights_))
    assert np.all(np.abs(counts - n * ours.weights_) < 5 * sd)
    for k in range(K):
        xs, cov = x[y == k], ours.covariances_[k]
        assert np.all(np.abs(xs.mean(axis=0) - ours.means_[k]) < 5 * np.sqrt(np.diag(cov) / len(xs)))
        se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / len(xs))
        assert np.all(np.abs(np.cov(xs.T) - cov) < 5 * se)


def test_pickle_round_trip():
    ours, _ = fitted_pair()
    again = pickle.loads(pickle.dumps(ours))
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "restart_log_likelihoods_"):
        np.testing.assert_array_equal(getattr(again, name), getattr(ours, name))
    np.testing.assert_array_equal(again.score_samples(X_TEST), ours.score_samples(X_TEST))
    np.testing.assert_array_equal(again.predict_proba(X_TEST), ours.predict_proba(X_TEST))


def test_verbose_reports_every_restart(capsys):
    # The same configuration and shapes as the restarts test, so nothing new compiles.
    GaussianMixture(K, covariance_type="diag", n_init=5, init_params="random", random_state=1,
                    verbose=2, verbose_interval=1).fit(X_UNIFORM)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Initialization 1" in out
    assert "Iteration 1\t lower bound change inf" in out
    assert "converged" in out


def test_float64_without_touching_the_global_flag():
    """With JAX's global flag off (float32, its default; the test suite turns it on), fitting and
    predicting leave it off and still compute in float64: they match scikit-learn to 1e-10, beyond
    float32's reach. (Same model and shapes as the tests above: nothing new compiles.)"""
    start = random_start(np.random.default_rng(8), "diag", X_TRAIN)
    settings_ = dict(n_components=K, covariance_type="diag", tol=1e-9, **start)
    reference = mixture.GaussianMixture(**settings_).fit(X_TRAIN)
    jax.config.update("jax_enable_x64", False)
    try:
        ours = GaussianMixture(**settings_).fit(X_TRAIN)
        scores = ours.score_samples(X_TEST)
        assert not jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", True)
    assert ours.means_.dtype == np.float64 and scores.dtype == np.float64
    assert ours.n_iter_ == reference.n_iter_ > 3
    np.testing.assert_allclose(ours.means_, reference.means_, rtol=1e-10)
    np.testing.assert_allclose(scores, reference.score_samples(X_TEST), rtol=1e-10)


def test_squarem_reaches_the_same_optimum_in_fewer_iterations():
    """acceleration="squarem" (jaxem's own setting) runs `fit_restarts` with SQUAREM: from the same
    start, the same fitted mixture as plain EM after fewer accepted iterations; a bad value is a
    ValueError naming the setting."""
    start = random_start(np.random.default_rng(3), "full", X_TRAIN)
    settings_ = dict(n_components=K, tol=1e-10, max_iter=500, **start)
    plain = GaussianMixture(**settings_).fit(X_UNIFORM)
    fast = GaussianMixture(**settings_, acceleration="squarem").fit(X_UNIFORM)
    assert fast.converged_ and plain.converged_ and fast.n_iter_ < plain.n_iter_ / 2
    assert fast.lower_bound_ == pytest.approx(plain.lower_bound_, abs=1e-7)   # both within tol
    np.testing.assert_allclose(fast.means_, plain.means_, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="acceleration"):
        GaussianMixture(K, acceleration="anderson").fit(X_TRAIN)


def test_degenerate_solution_warns():
    """A start that puts a narrow component on the point 1 of 1, 2, 3, 10, 11, 12 ends degenerate
    (ℓ/N -1.835, above the meaningful -1.909): the estimator keeps it, as the only restart, and
    says so with a `DegenerateSolutionWarning`; `restart_degenerate_` records it."""
    x = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0])[:, None]
    narrow = GaussianMixture(2, weights_init=[1 / 6, 5 / 6], means_init=[[1.0], [8.0]],
                             precisions_init=np.array([[[1e3]], [[0.05]]]), random_state=0)
    with pytest.warns(DegenerateSolutionWarning, match="Every restart's solution is degenerate"):
        narrow.fit(x)
    assert narrow.restart_degenerate_.tolist() == [True]
    np.testing.assert_allclose(narrow.lower_bound_, -11.0125 / 6, atol=1e-4)
    spread = GaussianMixture(2, means_init=[[2.0], [11.0]], random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateSolutionWarning)
        spread.fit(x)
    assert spread.restart_degenerate_.tolist() == [False]


def test_iris_degenerate_optimum_is_passed_over():
    """Issue 15's example: 128 restarts of a 3-component full mixture on the iris measurements
    (29 setosa rows share petal width 0.2). With init_params="random_from_data" two restarts
    reach ℓ ≈ -99.2 with a component whose smallest eigenvalue is reg_covar; the estimator
    returns the familiar optimum ℓ ≈ -180.19 instead and warns about what it passed over."""
    from sklearn.datasets import load_iris

    x = load_iris().data
    gm = GaussianMixture(3, n_init=128, init_params="random_from_data", random_state=0, max_iter=500)
    with pytest.warns(DegenerateSolutionWarning, match="passed over"):
        gm.fit(x)
    lls = gm.restart_log_likelihoods_ * len(x)
    assert np.nanmax(lls) > -100.0
    assert gm.restart_degenerate_[np.nanargmax(lls)]
    np.testing.assert_allclose(gm.lower_bound_ * len(x), -180.186, atol=5e-3)
    assert np.linalg.eigvalsh(gm.covariances_).min() > 1e-3


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_same_random_state_same_fit_as_scikit_learn(init_params):
    """scikit-learn's starting points, draw for draw: with the same int `random_state`, every
    restart ends where scikit-learn's does (its n_init restarts are consecutive draws from one
    RandomState, so restart r is scikit-learn's fit number r on a shared RandomState)."""
    rng = np.random.RandomState(0)
    x = np.concatenate([rng.randn(60, 3), rng.randn(50, 3) * 0.5 + [4, 4, 0],
                        rng.randn(40, 3) + [0, 5, 5]])
    ours = GaussianMixture(3, covariance_type="diag", init_params=init_params, n_init=3,
                           random_state=7).fit(x)
    shared = np.random.RandomState(7)
    for r in range(3):
        theirs = mixture.GaussianMixture(3, covariance_type="diag", init_params=init_params,
                                         random_state=shared).fit(x)
        np.testing.assert_allclose(ours.restart_log_likelihoods_[r], theirs.lower_bound_, rtol=1e-12)
    single = GaussianMixture(3, init_params=init_params, random_state=11).fit(x)
    reference = mixture.GaussianMixture(3, init_params=init_params, random_state=11).fit(x)
    assert single.n_iter_ == reference.n_iter_
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(single, name), getattr(reference, name), rtol=1e-9, atol=1e-12)
