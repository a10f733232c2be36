"""jaxem.sklearn's CategoricalHMM, PoissonHMM, MultinomialHMM and GMMHMM against hmmlearn's: the
same Baum–Welch trajectory from the same starting parameters (parameters, monitor_.history and
monitor_.iter; every covariance type of GMMHMM, with non-default priors), hmmlearn's starting
draws for the same int seed, vmapped restarts, and a monitor of the user's kind seeing every
iteration. (hmmlearn's own test files for these estimators run against the faces in
tests/test_peer_hmmlearn.py.)

Data are small and shared, so that each face compiles few programs.
"""

import logging

import numpy as np
import pytest
from hmmlearn import hmm
from hmmlearn.base import ConvergenceMonitor as HmmlearnMonitor

from jaxem import sklearn as faces

K = 2
LENGTHS = np.array([30, 25, 20])
N_ITER = 30
TIGHT = 1e-6


def chain(rng, k=K):
    """Random starting π and A."""
    return {"startprob_": rng.dirichlet(np.ones(k) * 2), "transmat_": rng.dirichlet(np.ones(k) * 2, size=k)}


def states(rng, n, transmat):
    z = [0]
    for _ in range(n - 1):
        z.append(rng.choice(len(transmat), p=transmat[z[-1]]))
    return np.array(z)


RNG = np.random.default_rng(0)
TRUE_TRANSMAT = np.array([[0.85, 0.15], [0.2, 0.8]])
Z = states(RNG, LENGTHS.sum(), TRUE_TRANSMAT)
SYMBOLS = np.where(Z == 0, RNG.choice(4, size=Z.size, p=[0.6, 0.2, 0.1, 0.1]),
                   RNG.choice(4, size=Z.size, p=[0.1, 0.1, 0.3, 0.5]))[:, None]
COUNTS = RNG.poisson(np.where(Z[:, None] == 0, [1.0, 4.0], [5.0, 0.5]))
TRIALS = np.stack([RNG.multinomial(6, [0.5, 0.3, 0.2] if z == 0 else [0.1, 0.3, 0.6]) for z in Z])
MIXED = (np.where(Z[:, None] == 0, [0.0, 0.0], [4.0, 3.0])
         + RNG.choice([-1.5, 1.5], size=(Z.size, 1)) + RNG.normal(scale=0.6, size=(Z.size, 2)))


def assert_same_fit(ours, theirs, names):
    for name in names:
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=TIGHT, atol=TIGHT,
                                   err_msg=name)
    assert ours.monitor_.iter == theirs.monitor_.iter
    np.testing.assert_allclose(list(ours.monitor_.history), list(theirs.monitor_.history), rtol=1e-9)


def fit_both(ours, theirs, start, X):
    for model in (ours, theirs):
        for name, value in start.items():
            setattr(model, name, np.array(value))
        model.fit(X, LENGTHS)
    return ours, theirs


def test_categorical_trajectory_is_hmmlearns():
    rng = np.random.default_rng(1)
    start = dict(chain(rng), emissionprob_=rng.dirichlet(np.ones(4), K))
    settings = dict(n_iter=N_ITER, tol=1e-8, init_params="", startprob_prior=1.5, transmat_prior=2.0,
                    emissionprob_prior=1.2)
    ours, theirs = fit_both(faces.CategoricalHMM(K, **settings), hmm.CategoricalHMM(K, **settings),
                            start, SYMBOLS)
    assert_same_fit(ours, theirs, ("startprob_", "transmat_", "emissionprob_"))


@pytest.mark.parametrize("priors", [{}, {"lambdas_prior": 2.0, "lambdas_weight": 0.5}])
def test_poisson_trajectory_is_hmmlearns(priors):
    rng = np.random.default_rng(2)
    start = dict(chain(rng), lambdas_=rng.gamma(2.0, size=(K, 2)))
    settings = dict(n_iter=N_ITER, tol=1e-8, init_params="", **priors)
    ours, theirs = fit_both(faces.PoissonHMM(K, **settings), hmm.PoissonHMM(K, **settings), start, COUNTS)
    assert_same_fit(ours, theirs, ("startprob_", "transmat_", "lambdas_"))


def test_multinomial_trajectory_is_hmmlearns():
    rng = np.random.default_rng(3)
    start = dict(chain(rng), emissionprob_=rng.dirichlet(np.ones(3), K))
    settings = dict(n_iter=N_ITER, tol=1e-8, init_params="", n_trials=6)
    ours, theirs = fit_both(faces.MultinomialHMM(K, **settings), hmm.MultinomialHMM(K, **settings),
                            start, TRIALS)
    assert_same_fit(ours, theirs, ("startprob_", "transmat_", "emissionprob_"))


def gmm_start(rng, kind, m=2, d=2):
    if kind in ("full", "tied"):
        a = rng.normal(size=(K, m, d, d) if kind == "full" else (K, d, d))
        covars = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
    else:
        covars = rng.uniform(0.5, 2.0, size=(K, m, d) if kind == "diag" else (K, m))
    return dict(chain(rng), weights_=rng.dirichlet(np.ones(m) * 3, K),
                means_=rng.normal(scale=2.0, size=(K, m, d)) + [[[0, 0]], [[4, 3]]], covars_=covars)


@pytest.mark.parametrize("kind", ["diag", "full", "tied", "spherical"])
@pytest.mark.parametrize("priors", [{}, {"weights_prior": 1.5, "means_prior": 0.5, "means_weight": 0.3,
                                         "covars_prior": 0.2, "covars_weight": 2.0}])
def test_gmm_trajectory_is_hmmlearns(kind, priors):
    """hmmlearn's GMM-HMM M-step, priors (its defaults and others) and scatter about the E-step's
    means included, from the same start."""
    start = gmm_start(np.random.default_rng(4), kind)
    settings = dict(n_mix=2, covariance_type=kind, n_iter=N_ITER, tol=1e-8, init_params="", **priors)
    ours, theirs = fit_both(faces.GMMHMM(K, **settings), hmm.GMMHMM(K, **settings), start, MIXED)
    assert_same_fit(ours, theirs, ("startprob_", "transmat_", "weights_", "means_", "covars_"))


@pytest.mark.parametrize("face, kwargs, X, names", [
    ("CategoricalHMM", {}, SYMBOLS, ("startprob_", "transmat_", "emissionprob_")),
    ("PoissonHMM", {}, COUNTS, ("startprob_", "transmat_", "lambdas_")),
    ("MultinomialHMM", {"n_trials": 6}, TRIALS, ("startprob_", "transmat_", "emissionprob_")),
    ("GMMHMM", {"n_mix": 2}, MIXED, ("startprob_", "transmat_", "weights_", "means_", "covars_")),
])
def test_starting_values_are_hmmlearns_for_the_same_seed(face, kwargs, X, names):
    ours = getattr(faces, face)(K, random_state=7, **kwargs)._init(X, LENGTHS)
    theirs = getattr(hmm, face)(K, random_state=7, **kwargs)
    theirs._init(X, LENGTHS)
    for name in names:
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-12, err_msg=name)


def test_restarts_keep_the_best_and_the_first_is_hmmlearns():
    """n_init restarts in one program: restart_log_likelihoods_ holds each one's final ℓ, the
    kept one is the best, and a single-restart fit with the same seed is hmmlearn's fit."""
    ours = faces.PoissonHMM(K, n_init=4, random_state=3, n_iter=N_ITER, tol=1e-8).fit(COUNTS, LENGTHS)
    scores = ours.restart_log_likelihoods_
    assert scores.shape == (4,) and np.all(np.isfinite(scores))
    assert ours.monitor_.history[-1] == np.max(scores)   # the kept restart's last ℓ
    single = faces.PoissonHMM(K, random_state=3, n_iter=N_ITER, tol=1e-8).fit(COUNTS, LENGTHS)
    reference = hmm.PoissonHMM(K, random_state=3, n_iter=N_ITER, tol=1e-8).fit(COUNTS, LENGTHS)
    assert_same_fit(single, reference, ("startprob_", "transmat_", "lambdas_"))
    assert scores[0] == pytest.approx(reference.monitor_.history[-1], rel=1e-9)   # restart 0 is it


class StrictMonitor(HmmlearnMonitor):
    """hmmlearn's monitor, recording what `converged` was asked about."""

    seen = []

    @property
    def converged(self):
        StrictMonitor.seen.append(list(self.history))
        return super().converged


def test_a_monitor_of_the_users_kind_sees_every_iteration():
    model = faces.CategoricalHMM(K, random_state=0, n_iter=8, tol=1e-8)
    model.monitor_ = StrictMonitor(model.monitor_.tol, model.monitor_.n_iter, model.monitor_.verbose)
    StrictMonitor.seen.clear()
    model.fit(SYMBOLS, LENGTHS)
    assert type(model.monitor_) is StrictMonitor
    history = list(model.monitor_.history)
    assert len(history) == model.monitor_.iter == 8
    assert StrictMonitor.seen == [history[:i + 1] for i in range(len(history))]


@pytest.mark.parametrize("make, X, message", [
    (lambda: faces.CategoricalHMM(K), SYMBOLS.astype(float), "integers"),
    (lambda: faces.CategoricalHMM(K), np.hstack([SYMBOLS, SYMBOLS]), "one symbol per row"),
    (lambda: faces.CategoricalHMM(K, n_features=2), SYMBOLS, "largest symbol"),
    (lambda: faces.PoissonHMM(K), COUNTS + 0.5, "whole numbers"),
    (lambda: faces.MultinomialHMM(K, n_trials=5), TRIALS, "number of trials"),
    (lambda: faces.GMMHMM(K, covariance_type="bad"), MIXED, "covariance_type"),
])
def test_misuse_raises_value_errors_that_say_what_to_fix(make, X, message):
    with pytest.raises(ValueError, match=message):
        make().fit(X, LENGTHS)


def test_multinomial_sampling_needs_one_number_of_trials(caplog):
    model = faces.MultinomialHMM(K, n_iter=2).fit(TRIALS, LENGTHS)
    x, z = model.sample(50, random_state=0)
    assert x.shape == (50, 3) and np.all(x.sum(axis=1) == 6) and z.shape == (50,)
    model.n_trials = np.array([6, 7])
    with pytest.raises(ValueError, match="single number of trials"):
        model.sample(5)
    with caplog.at_level(logging.WARNING):
        faces.MultinomialHMM(K)
    assert not caplog.records


def test_edge_cases_hmmlearn_accepts_or_refuses_clearly():
    """K = 1 with a 1-D table (hmmlearn's `_check` makes it 2-D), currstate checked, n_iter=0
    reports no degenerate restart, a refit with n_trials taken from other data and a prior of
    the wrong shape say which setting to change."""
    one = faces.CategoricalHMM(1, n_features=4)
    one.startprob_, one.transmat_, one.emissionprob_ = np.ones(1), np.ones((1, 1)), np.full(4, 0.25)
    assert one.score(SYMBOLS) == pytest.approx(SYMBOLS.size * np.log(0.25))
    model = faces.CategoricalHMM(K, n_iter=0).fit(SYMBOLS, LENGTHS)
    assert model.restart_degenerate_.tolist() == [False]
    for bad in (-1, K, 0.5):
        with pytest.raises(ValueError, match="currstate"):
            model.sample(3, currstate=bad)
    fitted = faces.MultinomialHMM(K, n_iter=1).fit(TRIALS, LENGTHS)
    with pytest.raises(ValueError, match="n_trials=None"):
        fitted.fit(TRIALS[:40], [40])
    with pytest.raises(ValueError, match=r"startprob_prior: .*shape \(2,\)"):
        faces.CategoricalHMM(K, startprob_prior=np.ones(3)).fit(SYMBOLS, LENGTHS)
    with pytest.raises(ValueError, match="weights_prior"):
        faces.GMMHMM(K, n_mix=2, weights_prior=np.ones(3)).fit(MIXED, LENGTHS)
