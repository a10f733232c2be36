"""jaxem.sklearn.GaussianHMM against hmmlearn's GaussianHMM: the same Baum–Welch trajectory from the
same starting parameters (all four covariance types, with priors, 1e-6), hmmlearn's Dirichlet draws of
π and A, the `params` letters, vmapped restarts, the same exceptions for the same misuse, sampling,
pickling and float64 with JAX's global flag off.

Compiles are shared: every fit uses the training sequences (lengths LENGTHS, D features, K states),
the priors PRIORS and n_iter=N_ITER; scored data always has 3 sequences of at most 64 steps (the same
padded shape as the training data).
"""

import pickle
import warnings

import jax
import numpy as np
import pytest
from hmmlearn import hmm
from sklearn.exceptions import NotFittedError

from jaxem import DegenerateSolutionWarning
from jaxem.sklearn import GaussianHMM
from jaxem.sklearn import _hmm as hmm_base

COVARIANCE_TYPES = ("diag", "full", "tied", "spherical")
K, D = 3, 2
LENGTHS = np.array([40, 35, 25])
TEST_LENGTHS = np.array([50, 20, 34])
N_ITER = 100
TIGHT = 1e-6
# Non-default priors, so that every term of hmmlearn's M-step is exercised.
PRIORS = dict(startprob_prior=2.0, transmat_prior=1.5, means_prior=0.5, means_weight=2.0,
              covars_prior=0.05, covars_weight=3.0)
TRUE_TRANSMAT = np.array([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])
TRUE_MEANS = np.array([[0.0, 0.0], [4.0, 1.0], [1.0, 5.0]])


def draw_sequences(rng, lengths):
    """Concatenated sequences of a 3-state HMM with unit-variance Gaussian emissions."""
    out = []
    for n in lengths:
        z = [rng.choice(K)]
        for _ in range(n - 1):
            z.append(rng.choice(K, p=TRUE_TRANSMAT[z[-1]]))
        out.append(TRUE_MEANS[np.array(z)] + rng.normal(size=(n, D)))
    return np.concatenate(out)


X_TRAIN = draw_sequences(np.random.default_rng(0), LENGTHS)
X_TEST = draw_sequences(np.random.default_rng(1), TEST_LENGTHS)


def random_start(rng, covariance_type):
    """Random π, A (rows on the simplex), means near the true ones and SPD covariances."""
    if covariance_type in ("full", "tied"):
        a = rng.normal(size=(K if covariance_type == "full" else 1, D, D))
        covars = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(D)
        covars = covars if covariance_type == "full" else covars[0]
    else:
        covars = rng.uniform(0.5, 2.0, size=(K, D) if covariance_type == "diag" else K)
    return {"startprob_": rng.dirichlet(np.ones(K)), "transmat_": rng.dirichlet(np.ones(K) * 2, size=K),
            "means_": TRUE_MEANS + rng.normal(scale=0.7, size=(K, D)), "covars_": covars}


def with_start(estimator, start):
    for name, value in start.items():
        setattr(estimator, name, value)
    return estimator


def stored_covars(estimator):
    """The per-type covariances; hmmlearn keeps spherical ones as (K, D) repeated columns after a fit."""
    covars = np.asarray(estimator._covars_)
    return covars.reshape(K, -1)[:, 0] if estimator.covariance_type == "spherical" else covars


def assert_same_model(ours, reference, data_sets=((X_TRAIN, LENGTHS), (X_TEST, TEST_LENGTHS))):
    close = dict(rtol=TIGHT, atol=TIGHT)
    for name in ("startprob_", "transmat_", "means_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(reference, name), err_msg=name, **close)
    np.testing.assert_allclose(stored_covars(ours), stored_covars(reference), **close)
    assert ours.covars_.shape == (K, D, D)
    for x, lengths in data_sets:
        np.testing.assert_allclose(ours.score(x, lengths), reference.score(x, lengths), **close)
        ours_ll, ours_post = ours.score_samples(x, lengths)
        reference_ll, reference_post = reference.score_samples(x, lengths)
        np.testing.assert_allclose(ours_ll, reference_ll, **close)
        np.testing.assert_allclose(ours_post, reference_post, **close)
        np.testing.assert_allclose(ours.predict_proba(x, lengths), reference_post, **close)
        for algorithm in ("viterbi", "map"):
            ours_score, ours_states = ours.decode(x, lengths, algorithm=algorithm)
            reference_score, reference_states = reference.decode(x, lengths, algorithm=algorithm)
            np.testing.assert_allclose(ours_score, reference_score, **close)
            np.testing.assert_array_equal(ours_states, reference_states)
        np.testing.assert_array_equal(ours.predict(x, lengths), reference.predict(x, lengths))
        np.testing.assert_allclose(ours.aic(x, lengths), reference.aic(x, lengths), **close)
        np.testing.assert_allclose(ours.bic(x, lengths), reference.bic(x, lengths), **close)


def assert_same_monitor(ours, reference):
    assert ours.monitor_.iter == reference.monitor_.iter
    assert ours.monitor_.converged == reference.monitor_.converged
    np.testing.assert_allclose(list(ours.monitor_.history), list(reference.monitor_.history),
                               rtol=TIGHT, atol=TIGHT)


def fit_both(start, **settings):
    settings = dict(n_components=K, n_iter=N_ITER, init_params="", **PRIORS) | settings
    ours = with_start(GaussianHMM(**settings), start).fit(X_TRAIN, LENGTHS)
    reference = with_start(hmm.GaussianHMM(**settings), start).fit(X_TRAIN, LENGTHS)
    return ours, reference


# ------------------------------------------------------------------------------------------------
# The same trajectory as hmmlearn
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_hmmlearn_from_the_same_start(covariance_type):
    start = random_start(np.random.default_rng(2), covariance_type)
    ours, reference = fit_both(start, covariance_type=covariance_type, tol=1e-7)
    assert reference.monitor_.iter > 5 and reference.monitor_.iter < N_ITER   # converged, not one step
    assert_same_monitor(ours, reference)
    assert_same_model(ours, reference)
    np.testing.assert_allclose(ours.restart_log_likelihoods_, [reference.monitor_.history[-1]], rtol=TIGHT)


def test_draws_hmmlearn_starting_chain_from_the_same_random_state():
    """init_params="st": π and A are drawn from Dirichlet(1/K) with random_state, as hmmlearn does."""
    start = random_start(np.random.default_rng(3), "diag")
    del start["startprob_"], start["transmat_"]
    ours, reference = fit_both(start, covariance_type="diag", init_params="st", random_state=11, tol=1e-7)
    assert_same_monitor(ours, reference)
    assert_same_model(ours, reference, data_sets=((X_TEST, TEST_LENGTHS),))


def test_params_letters_leave_the_other_parameters_alone():
    start = random_start(np.random.default_rng(4), "spherical")
    ours, reference = fit_both(start, covariance_type="spherical", params="mc", tol=1e-7)
    np.testing.assert_array_equal(ours.startprob_, start["startprob_"])
    np.testing.assert_array_equal(ours.transmat_, start["transmat_"])
    assert_same_monitor(ours, reference)
    assert_same_model(ours, reference, data_sets=((X_TEST, TEST_LENGTHS),))


def test_n_iter_zero_keeps_the_start():
    start = random_start(np.random.default_rng(5), "diag")
    ours = with_start(GaussianHMM(K, init_params="", n_iter=0, **PRIORS), start).fit(X_TRAIN, LENGTHS)
    for name in ("startprob_", "transmat_", "means_"):
        np.testing.assert_array_equal(getattr(ours, name), start[name])
    assert ours.monitor_.iter == 0 and not ours.monitor_.history


# ------------------------------------------------------------------------------------------------
# Restarts
# ------------------------------------------------------------------------------------------------

def test_restarts_run_as_one_program_and_match_hmmlearn_per_restart(monkeypatch):
    n_init = 4
    calls = []
    program = hmm_base._fit_program

    def recording_program(model, m_step, finish, data, rows, keys, *args):
        outputs = program(model, m_step, finish, data, rows, keys, *args)
        calls.append((keys.shape, outputs[0]))   # outputs[0]: every restart's starting point
        return outputs

    monkeypatch.setattr(hmm_base, "_fit_program", recording_program)
    ours = GaussianHMM(K, n_iter=N_ITER, n_init=n_init, random_state=5, tol=1e-7, **PRIORS)
    ours.fit(X_TRAIN, LENGTHS)
    assert len(calls) == 1 and calls[0][0] == (n_init,)
    starts = [np.asarray(leaf) for leaf in calls[0][1]]
    references = []
    for r in range(n_init):
        start = dict(zip(("startprob_", "transmat_", "means_", "covars_"), (s[r] for s in starts),
                         strict=True))
        references.append(with_start(hmm.GaussianHMM(K, n_iter=N_ITER, init_params="", tol=1e-7, **PRIORS),
                                     start).fit(X_TRAIN, LENGTHS))
    expected = np.array([reference.monitor_.history[-1] for reference in references])
    np.testing.assert_allclose(ours.restart_log_likelihoods_, expected, rtol=TIGHT)
    assert np.ptp(expected) > 1e-3   # different optima, so choosing the best matters
    best = int(np.argmax(expected))
    assert_same_monitor(ours, references[best])
    assert_same_model(ours, references[best], data_sets=((X_TEST, TEST_LENGTHS),))


# ------------------------------------------------------------------------------------------------
# The same exceptions for the same misuse
# ------------------------------------------------------------------------------------------------

def raised(fn):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the test compares exception types
        return error
    raise AssertionError("no exception raised")


FITTED = {}


def fitted(cls):
    """One fitted estimator of each class (the first covariance test's configuration)."""
    if cls not in FITTED:
        start = random_start(np.random.default_rng(2), "diag")
        FITTED[cls] = with_start(cls(K, n_iter=N_ITER, init_params="", tol=1e-7, random_state=0, **PRIORS),
                                 start).fit(X_TRAIN, LENGTHS)
    return FITTED[cls]


MISUSE = {
    "lengths do not sum to N": lambda cls: fitted(cls).score(X_TEST, [50, 20]),
    "1-D X": lambda cls: fitted(cls).score(X_TEST[:, 0]),
    "NaN in X": lambda cls: cls(K).fit(np.where(np.arange(len(X_TRAIN))[:, None] == 3, np.nan, X_TRAIN)),
    "startprob_ not summing to 1": lambda cls: with_start(
        cls(K, init_params="tmc"), {"startprob_": np.full(K, 0.5)}).fit(X_TRAIN, LENGTHS),
    "bad decoder": lambda cls: fitted(cls).decode(X_TEST, TEST_LENGTHS, algorithm="nope"),
}


@pytest.mark.parametrize("misuse", sorted(MISUSE))
def test_same_exception_type_as_hmmlearn(misuse):
    ours = raised(lambda: MISUSE[misuse](GaussianHMM))
    reference = raised(lambda: MISUSE[misuse](hmm.GaussianHMM))
    assert isinstance(reference, ValueError), reference
    assert isinstance(ours, ValueError), ours


def test_bad_covariance_type_is_a_value_error():
    """hmmlearn 0.3.3 fails with a KeyError from inside its fit; ours names the argument."""
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianHMM(K, covariance_type="banana").fit(X_TRAIN, LENGTHS)
    with pytest.raises(KeyError):
        hmm.GaussianHMM(K, covariance_type="banana").fit(X_TRAIN, LENGTHS)


@pytest.mark.parametrize("method", ["score", "score_samples", "predict", "predict_proba", "decode"])
def test_not_fitted(method):
    for cls in (GaussianHMM, hmm.GaussianHMM):
        assert isinstance(raised(lambda c=cls: getattr(c(K), method)(X_TEST)), NotFittedError)
    assert isinstance(raised(lambda: GaussianHMM(K).sample(3)), NotFittedError)


# ------------------------------------------------------------------------------------------------
# Sampling, pickling, verbose output, float64 without the global flag
# ------------------------------------------------------------------------------------------------

def test_sample_follows_the_chain_and_the_emissions():
    ours = fitted(GaussianHMM)
    n = 4000
    x, z = ours.sample(n, currstate=2)
    assert x.shape == (n, D) and x.dtype == np.float64 and z.shape == (n,) and z[0] == 2
    x_again, z_again = ours.sample(n, currstate=2)
    np.testing.assert_array_equal(x, x_again)   # an int random_state makes sample reproducible
    # Transition frequencies within 5 binomial standard errors of transmat_.
    for i in range(K):
        following = z[1:][z[:-1] == i]
        counts = np.bincount(following, minlength=K)
        p = ours.transmat_[i]
        assert np.all(np.abs(counts - len(following) * p) < 5 * np.sqrt(len(following) * p * (1 - p)) + 1)
        xs = x[z == i]
        se = np.sqrt(np.diag(ours.covars_[i]) / len(xs))
        assert np.all(np.abs(xs.mean(axis=0) - ours.means_[i]) < 5 * se)
    np.testing.assert_allclose(ours.get_stationary_distribution() @ ours.transmat_,
                               ours.get_stationary_distribution(), atol=1e-12)


def test_pickle_round_trip():
    ours = fitted(GaussianHMM)
    again = pickle.loads(pickle.dumps(ours))
    for name in ("startprob_", "transmat_", "means_", "covars_", "restart_log_likelihoods_"):
        np.testing.assert_array_equal(getattr(again, name), getattr(ours, name))
    assert list(again.monitor_.history) == list(ours.monitor_.history)
    np.testing.assert_array_equal(again.predict_proba(X_TEST, TEST_LENGTHS),
                                  ours.predict_proba(X_TEST, TEST_LENGTHS))


def test_verbose_prints_hmmlearn_rows(capsys):
    start = random_start(np.random.default_rng(2), "diag")
    ours = with_start(GaussianHMM(K, n_iter=N_ITER, init_params="", tol=1e-7, verbose=True, **PRIORS), start)
    ours.fit(X_TRAIN, LENGTHS)
    rows = capsys.readouterr().err.strip().splitlines()
    assert len(rows) == ours.monitor_.iter
    assert float(rows[-1].split()[1]) == pytest.approx(ours.monitor_.history[-1])


def test_float64_without_touching_the_global_flag():
    """With JAX's global flag off (float32, its default; the test suite turns it on), fit and score
    leave it off and still compute in float64 (hmmlearn agreement to 1e-10)."""
    start = random_start(np.random.default_rng(2), "diag")
    reference = fitted(hmm.GaussianHMM)
    jax.config.update("jax_enable_x64", False)
    try:
        ours = with_start(GaussianHMM(K, n_iter=N_ITER, init_params="", tol=1e-7, random_state=0, **PRIORS),
                          start).fit(X_TRAIN, LENGTHS)
        score = ours.score(X_TEST, TEST_LENGTHS)
        assert not jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", True)
    assert ours.means_.dtype == np.float64
    np.testing.assert_allclose(ours.means_, reference.means_, rtol=1e-10)
    np.testing.assert_allclose(score, reference.score(X_TEST, TEST_LENGTHS), rtol=1e-10)


def test_squarem_reaches_the_same_optimum_in_fewer_iterations():
    """acceleration="squarem" (jaxem's own setting): from the same start, the same fitted model as
    plain Baum–Welch after fewer accepted iterations; a bad value is a ValueError naming it."""
    start = random_start(np.random.default_rng(5), "diag")
    settings_ = dict(n_components=K, n_iter=N_ITER * 5, init_params="", tol=1e-9)
    plain = with_start(GaussianHMM(**settings_), start).fit(X_TRAIN, LENGTHS)
    fast = with_start(GaussianHMM(**settings_, acceleration="squarem"), start).fit(X_TRAIN, LENGTHS)
    assert plain.monitor_.converged and fast.monitor_.converged
    assert fast.monitor_.iter < plain.monitor_.iter / 2
    assert fast.monitor_.history[-1] == pytest.approx(plain.monitor_.history[-1], abs=1e-6)
    np.testing.assert_allclose(fast.means_, plain.means_, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="acceleration"):
        GaussianHMM(K, acceleration="fast").fit(X_TRAIN, LENGTHS)


def test_fit_runs_the_scaled_recursion_and_falls_back_to_log_space(monkeypatch):
    """`fit` runs jaxem's scaled forward–backward whatever `implementation` says; with "log" a fit
    whose every restart came out non-finite (here: made so) is rerun in log space, and that rerun's
    result is kept (hmmlearn's trajectory); with "scaling" it is not rerun and the error says so."""
    program = hmm_base._fit_program
    algorithms = []

    def scaled_underflows(model, *args):
        algorithms.append(model.algorithm)
        params0, fits, final, last = program(model, *args)
        if model.algorithm == "scaled":
            last = last * np.nan
        return params0, fits, final, last

    monkeypatch.setattr(hmm_base, "_fit_program", scaled_underflows)
    start = random_start(np.random.default_rng(2), "diag")
    ours = with_start(GaussianHMM(K, n_iter=N_ITER, init_params="", tol=1e-7, **PRIORS),
                      start).fit(X_TRAIN, LENGTHS)
    assert algorithms == ["scaled", "log"]
    reference = with_start(hmm.GaussianHMM(K, n_iter=N_ITER, init_params="", tol=1e-7, **PRIORS),
                           start).fit(X_TRAIN, LENGTHS)
    assert_same_monitor(ours, reference)
    algorithms.clear()
    with pytest.raises(ValueError, match="non-finite"):
        with_start(GaussianHMM(K, n_iter=N_ITER, init_params="", tol=1e-7, implementation="scaling",
                               **PRIORS), start).fit(X_TRAIN, LENGTHS)
    assert algorithms == ["scaled"]


def test_state_on_one_outlier_warns_degenerate():
    """A state started on the one outlier of a sequence keeps it: one expected step, fewer than
    diag variances need. The estimator returns that fit (its only restart) with a
    `DegenerateSolutionWarning` and records it in `restart_degenerate_`; a start whose states
    share the bulk of the data is not flagged."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0.0, 1.0, 40), [50.0]])[:, None]

    def started(means, covars):
        model = GaussianHMM(2, "diag", init_params="", n_iter=50, random_state=0)
        model.startprob_ = np.array([0.5, 0.5])
        model.transmat_ = np.array([[0.9, 0.1], [0.9, 0.1]])
        model.means_ = np.array(means)
        model.covars_ = np.array(covars)
        return model

    with pytest.warns(DegenerateSolutionWarning, match="Every restart's solution is degenerate"):
        on_outlier = started([[0.0], [50.0]], [[1.0], [1e-3]]).fit(x)
    assert on_outlier.restart_degenerate_.tolist() == [True]
    np.testing.assert_allclose(on_outlier.means_[1], [50.0], atol=1e-6)
    bulk = started([[-1.0], [1.0]], [[1.0], [1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateSolutionWarning)
        bulk.fit(x[:40])
    assert bulk.restart_degenerate_.tolist() == [False]
