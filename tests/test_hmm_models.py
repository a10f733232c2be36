"""Ready HMMs (issue 3) against hmmlearn 0.3 from the same parameters: forward
log-likelihood, posteriors, Viterbi path and one Baum–Welch step, for Gaussian (four
covariance types), categorical and Poisson emissions, on one and several sequences;
plus Dirichlet priors, structural zeros, initialisers and sampling."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hmmlearn import hmm

import jaxem
from jaxem.models import CategoricalHMMParams, GaussianHMMParams, PoissonHMMParams

K, D, M = 3, 2, 4
LENGTHS = [9, 14, 5]  # several sequences, hmmlearn's `lengths`
SINGLE = [20]
RNG = np.random.default_rng(0)
X_GAUSS = RNG.normal(size=(sum(LENGTHS), D)) + 2.0 * RNG.integers(0, 3, size=(sum(LENGTHS), 1))
X_CAT = RNG.integers(0, M, size=sum(LENGTHS))
X_POIS = RNG.poisson(RNG.choice([1.0, 4.0, 9.0], size=(sum(LENGTHS), 1)), size=(sum(LENGTHS), D))


# Jitted entry points with the model as a static argument: equal models share compiled code.
@functools.partial(jax.jit, static_argnums=0)
def baum_welch_step(model, params, data):
    """(posterior, Viterbi (paths, log-probs), parameters after one M-step) in one program."""
    posterior = model.e_step(params, data)
    return posterior, model.viterbi(params, data), model.maximize(model.statistics(posterior, data, params),
                                                                  params)


@functools.partial(jax.jit, static_argnums=0)
def decode(model, params, data):
    return model.viterbi(params, data)


@functools.partial(jax.jit, static_argnums=0)
def init_many(model, keys, data):
    return jax.vmap(lambda k: model.init(k, data))(keys)


@functools.partial(jax.jit, static_argnums=0)
def init_one(model, seed, data):
    return model.init(jax.random.PRNGKey(seed), data)


@functools.partial(jax.jit, static_argnums=0)
def likelihood_and_prior(model, params, data):
    return model.log_likelihood(params, data), model.log_prior(params)


def _chain(rng):
    return rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), K)


def _covariances(rng, kind):
    a = rng.normal(size=(K, D, D))
    full = a @ a.transpose(0, 2, 1) + np.eye(D)
    return {"full": full, "diag": rng.uniform(0.5, 2.0, (K, D)),
            "spherical": rng.uniform(0.5, 2.0, K), "tied": full[0]}[kind]


def _data(x, lengths):
    if len(lengths) == 1:
        return jnp.asarray(x[: lengths[0]])
    return jaxem.Sequences.from_concatenated(x, lengths)


def _real_rows(array, data):
    """The rows of a (T, ...) or (B, T, ...) result that belong to real steps, concatenated."""
    array = np.asarray(array)
    if isinstance(data, jaxem.Sequences):
        return array[np.asarray(data.mask)]
    return array


def _compare(model, params, data, ref, x, lengths, reference_update):
    """Log-likelihood, posteriors, Viterbi and one Baum–Welch step against hmmlearn."""
    x = x[: sum(lengths)]
    posterior, (paths, log_probs), updated = baum_welch_step(model, params, data)
    np.testing.assert_allclose(posterior.log_likelihood, ref.score(x, lengths), rtol=1e-9)
    np.testing.assert_allclose(_real_rows(posterior.marginals, data), ref.predict_proba(x, lengths),
                               atol=1e-9)
    ref_log_prob, ref_path = ref.decode(x, lengths, algorithm="viterbi")
    np.testing.assert_array_equal(_real_rows(paths, data), ref_path)
    np.testing.assert_allclose(np.sum(log_probs), ref_log_prob, rtol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(x, lengths)
    for ours, theirs in zip(updated, reference_update(ref), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


GAUSSIAN_MODELS = {kind: jaxem.models.gaussian_hmm(K, kind, reg_covar=0.0)
                   for kind in ("full", "diag", "spherical", "tied")}


# The single-sequence path is shared by every model; one covariance type checks it.
GAUSSIAN_CASES = [("full", SINGLE), ("full", LENGTHS), ("diag", LENGTHS), ("spherical", LENGTHS),
                  ("tied", LENGTHS)]


@pytest.mark.parametrize(("kind", "lengths"), GAUSSIAN_CASES,
                         ids=[f"{kind}-{len(lengths)}" for kind, lengths in GAUSSIAN_CASES])
def test_gaussian_hmm_equals_hmmlearn(kind, lengths):
    rng = np.random.default_rng(1)
    start, trans = _chain(rng)
    means = 2.0 * rng.normal(size=(K, D))
    covariances = _covariances(rng, kind)
    ref = hmm.GaussianHMM(K, kind, covars_prior=0.0, covars_weight=1.0, init_params="", n_iter=1)
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = start, trans, means, covariances
    params = GaussianHMMParams(*map(jnp.asarray, (start, trans, means, covariances)))

    def update(r):
        covars = r._covars_[:, 0] if kind == "spherical" else r._covars_
        return r.startprob_, r.transmat_, r.means_, covars

    _compare(GAUSSIAN_MODELS[kind], params, _data(X_GAUSS, lengths), ref, X_GAUSS, lengths, update)


CATEGORICAL = jaxem.models.categorical_hmm(K, M)


@pytest.mark.parametrize("lengths", [SINGLE, LENGTHS], ids=["one", "several"])
def test_categorical_hmm_equals_hmmlearn(lengths):
    rng = np.random.default_rng(2)
    start, trans = _chain(rng)
    emission = rng.dirichlet(np.ones(M), K)
    ref = hmm.CategoricalHMM(K, n_features=M, init_params="", n_iter=1)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = start, trans, emission
    params = CategoricalHMMParams(*map(jnp.asarray, (start, trans, emission)))
    _compare(CATEGORICAL, params, _data(X_CAT, lengths), ref, X_CAT[:, None], lengths,
             lambda r: (r.startprob_, r.transmat_, r.emissionprob_))


POISSON = jaxem.models.poisson_hmm(K)


@pytest.mark.parametrize("lengths", [SINGLE, LENGTHS], ids=["one", "several"])
def test_poisson_hmm_equals_hmmlearn(lengths):
    rng = np.random.default_rng(3)
    start, trans = _chain(rng)
    rates = rng.uniform(0.5, 10.0, (K, D))
    ref = hmm.PoissonHMM(K, init_params="", n_iter=1)
    ref.startprob_, ref.transmat_, ref.lambdas_ = start, trans, rates
    params = PoissonHMMParams(*map(jnp.asarray, (start, trans, rates)))
    _compare(POISSON, params, _data(X_POIS, lengths), ref, X_POIS, lengths,
             lambda r: (r.startprob_, r.transmat_, r.lambdas_))


def test_dirichlet_priors_equal_hmmlearn():
    """MAP M-step with Dirichlet priors on π, A (and B): hmmlearn's startprob_prior,
    transmat_prior and emissionprob_prior, including a concentration below 1."""
    model = jaxem.models.categorical_hmm(K, M, initial_prior=3.0, transition_prior=0.7, emission_prior=2.5)
    rng = np.random.default_rng(4)
    start, trans = _chain(rng)
    emission = rng.dirichlet(np.ones(M), K)
    ref = hmm.CategoricalHMM(K, n_features=M, startprob_prior=3.0, transmat_prior=0.7,
                             emissionprob_prior=2.5, init_params="", n_iter=1)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = start, trans, emission
    params = CategoricalHMMParams(*map(jnp.asarray, (start, trans, emission)))
    data = _data(X_CAT, LENGTHS)
    _, _, updated = baum_welch_step(model, params, data)
    ref.fit(X_CAT[:, None], LENGTHS)
    for ours, theirs in zip(updated, (ref.startprob_, ref.transmat_, ref.emissionprob_), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


PRIOR_MODEL = jaxem.models.gaussian_hmm(K, "diag", initial_prior=2.0, transition_prior=3.0)


def test_map_fit_is_monotone_in_the_map_objective():
    model = PRIOR_MODEL
    data = _data(X_GAUSS, LENGTHS)
    params0 = init_one(model, 0, data)
    result = jaxem.fit(model, data, params0, log_prior=model.log_prior, max_iter=30, tol=0.0)
    history = np.asarray(result.history)
    assert result.finite and np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))
    initial, transition = np.asarray(result.params.initial), np.asarray(result.params.transition)
    log_prior = np.sum(np.log(initial)) + 2.0 * np.sum(np.log(transition))  # (α - 1) Σ log p, α = 2, 3
    log_likelihood, model_log_prior = likelihood_and_prior(model, result.params, data)
    np.testing.assert_allclose(model_log_prior, log_prior, rtol=1e-12)
    np.testing.assert_allclose(result.log_likelihood, log_likelihood + log_prior, rtol=1e-12)


def test_structural_zeros_stay_zero():
    """A left-to-right transition matrix (zeros below the diagonal) keeps its zeros
    through fitting, even with a Dirichlet prior that would otherwise revive them."""
    model = PRIOR_MODEL
    data = _data(X_GAUSS, LENGTHS)
    left_right = np.triu(np.ones((K, K)))
    params0 = init_one(model, 1, data)._replace(
        transition=jnp.asarray(left_right / left_right.sum(1)[:, None]), initial=jnp.asarray([1.0, 0.0, 0.0]))
    result = jaxem.fit(model, data, params0, log_prior=model.log_prior, max_iter=30)
    assert result.finite
    transition = np.asarray(result.params.transition)
    assert np.all(transition[np.tril_indices(K, -1)] == 0) and np.all(np.diag(transition) > 0)
    assert np.all(np.asarray(result.params.initial)[1:] == 0)
    np.testing.assert_allclose(transition.sum(1), 1.0, rtol=1e-12)


def _repad(sequences, value):
    values, lengths = np.array(sequences.values), np.asarray(sequences.lengths)
    for b, n in enumerate(lengths):
        values[b, n:] = value
    return jaxem.Sequences(jnp.asarray(values), sequences.lengths)


def test_initialisers_ignore_padding_and_give_valid_parameters():
    """Padding values never reach an initialiser; starting probabilities have no zeros."""
    bounds = [0, 9, 23, 28]
    for model, x in [(jaxem.models.gaussian_hmm(K, "full"), X_GAUSS), (POISSON, X_POIS)]:
        pieces = [x[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        zeros = jaxem.Sequences.from_list(pieces, max_length=16)
        keys = jax.random.split(jax.random.PRNGKey(3), 4)
        a = init_many(model, keys, zeros)
        b = init_many(model, keys, _repad(zeros, 1000))
        for leaf_a, leaf_b in zip(a, b, strict=True):
            np.testing.assert_allclose(leaf_a, leaf_b, rtol=1e-10)
        transition = np.asarray(a.transition)
        assert np.all(np.asarray(a.initial) > 0) and np.all(transition > 0)
        np.testing.assert_allclose(transition.sum(-1), 1.0)
    emission = np.asarray(init_many(CATEGORICAL, keys, jnp.asarray(X_CAT)).emission)
    assert np.all(emission > 0)
    np.testing.assert_allclose(emission.sum(-1), 1.0)
    assert not np.allclose(emission[0], emission[1])


def test_sampling_reproduces_parameters():
    """Sequences drawn from a Gaussian HMM have its transition frequencies and per-state
    moments; fitting one recovers the parameters and Viterbi recovers the states."""
    model = jaxem.models.gaussian_hmm(2, "diag")
    truth = GaussianHMMParams(*map(np.array, ([0.6, 0.4], [[0.95, 0.05], [0.1, 0.9]],
                                              [[-2.0, 0.0], [2.0, 1.0]], [[1.0, 0.5], [0.5, 2.0]])))
    x, z = jax.jit(model.sample, static_argnums=2)(jax.random.PRNGKey(5), truth, 4000)
    xs, z = np.asarray(x), np.asarray(z)
    for k in range(2):
        np.testing.assert_allclose(xs[z == k].mean(0), truth.means[k], atol=0.12)
        np.testing.assert_allclose(xs[z == k].var(0), truth.covariances[k], rtol=0.12)
    counts = np.zeros((2, 2))
    np.add.at(counts, (z[:-1], z[1:]), 1)
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True), truth.transition, atol=0.02)
    params0 = GaussianHMMParams(*map(jnp.asarray, (truth.initial, np.full((2, 2), 0.5),
                                                   [[-1.0, -1.0], [1.0, 1.5]], np.ones((2, 2)))))
    result = jaxem.fit(model, x, params0, max_iter=100)
    order = np.argsort(np.asarray(result.params.means)[:, 0])
    np.testing.assert_allclose(np.asarray(result.params.means)[order], truth.means, atol=0.15)
    np.testing.assert_allclose(np.asarray(result.params.transition)[np.ix_(order, order)], truth.transition,
                               atol=0.03)
    paths, _ = decode(model, result.params, x)
    assert np.mean(order[np.asarray(paths)] == z) > 0.95


def test_categorical_and_poisson_sampling():
    """Per-state symbol frequencies and count means of sampled sequences match the parameters."""
    chain = (np.array([0.5, 0.3, 0.2]), np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]))
    emission = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4], [0.25, 0.25, 0.25, 0.25]])
    rates = np.array([[1.0, 5.0], [10.0, 0.5], [3.0, 3.0]])
    cat = CategoricalHMMParams(*map(jnp.asarray, (*chain, emission)))
    pois = PoissonHMMParams(*map(jnp.asarray, (*chain, rates)))
    (xc, zc), (xp, zp) = jax.jit(lambda key: (CATEGORICAL.sample(key, cat, 6000),
                                              POISSON.sample(jax.random.fold_in(key, 1), pois, 6000)))(
        jax.random.PRNGKey(8))
    xc, zc, xp, zp = map(np.asarray, (xc, zc, xp, zp))
    for k in range(K):
        frequencies = np.bincount(xc[zc == k], minlength=M) / np.sum(zc == k)
        np.testing.assert_allclose(frequencies, emission[k], atol=0.04)
        np.testing.assert_allclose(xp[zp == k].mean(0), rates[k], rtol=0.08)


def test_ready_models_reject_bad_data():
    with pytest.raises(ValueError, match="x\\[:, 0\\]"):
        CATEGORICAL.check_data(jnp.asarray(X_CAT[:, None]))
    with pytest.raises(ValueError, match="num_symbols"):
        CATEGORICAL.check_data(jnp.asarray(X_CAT + M))
    with pytest.raises(ValueError, match="x\\[:, None\\]"):
        GAUSSIAN_MODELS["full"].check_data(jnp.asarray(X_GAUSS[:, 0]))
    with pytest.raises(ValueError, match="non-negative"):
        POISSON.check_data(-X_POIS)
    with pytest.raises(ValueError, match="transition_prior"):
        jaxem.models.gaussian_hmm(K, transition_prior=-1.0)
    with pytest.raises(ValueError, match="algorithm"):
        jaxem.models.poisson_hmm(K, algorithm="fast")
