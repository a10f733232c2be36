"""The multinomial HMM (`jaxem.models.multinomial_hmm`): count vectors whose number of trials
varies per row. Its emission table against scipy's multinomial log-pmf and hmmlearn's
`MultinomialHMM._compute_log_likelihood`, its log-likelihood and posteriors against
enumeration of all state paths and hmmlearn's `score` / `predict_proba`, one M-step against
one hmmlearn iteration, priors against the categorical HMM on one-hot rows, monotone EM on
random models (hypothesis), coordinates, sampling, initialisation and input checks."""

import functools
import itertools
import logging
import warnings

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from hmmlearn import hmm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multinomial

import jaxem
from jaxem.models import CategoricalHMMParams, MultinomialHMMParams

K, M = 3, 4
LENGTHS = [7, 11, 5]
RNG = np.random.default_rng(0)
TRIALS = RNG.integers(0, 9, size=sum(LENGTHS))  # n_t varies per row, zero rows included
TRIALS[:2] = 0
X = np.stack([RNG.multinomial(n, RNG.dirichlet(np.ones(M))) for n in TRIALS])
MODEL = jaxem.models.multinomial_hmm(K, M)

logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # MultinomialHMM's "major changes" notice


@functools.partial(jax.jit, static_argnums=0)
def baum_welch_step(model, params, data):
    """(emission table, posterior, parameters after one M-step) in one program."""
    posterior = model.e_step(params, data)
    updated = model.maximize(model.statistics(posterior, data, params), params)
    return model.emission_table(params, data), posterior, updated


@functools.partial(jax.jit, static_argnums=0)
def init_many(model, keys, data):
    return jax.vmap(lambda k: model.init(k, data))(keys)


def _random_params(rng, zero=False):
    emission = rng.dirichlet(np.ones(M), K)
    if zero:  # a structural zero: x_tm = 0 with B_km = 0 must give 0, x_tm > 0 gives -inf
        emission[0, 1] = 0.0
        emission[0] /= emission[0].sum()
    return MultinomialHMMParams(rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), K), emission)


def _data(lengths):
    x = X[: sum(lengths)]
    return jnp.asarray(x) if len(lengths) == 1 else jaxem.Sequences.from_concatenated(x, lengths)


def _real_rows(array, data):
    array = np.asarray(array)
    return array[np.asarray(data.mask)] if isinstance(data, jaxem.Sequences) else array


def _reference(params, lengths):
    ref = hmm.MultinomialHMM(K, n_trials=X[: sum(lengths)].sum(1), init_params="", n_iter=1)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = map(np.asarray, params)
    return ref


def _scipy_table(x, emission):
    """log Multinomial(x_t | n_t, B_k) by scipy, one state at a time: (T, K)."""
    return np.stack([multinomial.logpmf(x, n=x.sum(1), p=emission[k]) for k in range(K)], axis=1)


def _enumerate(initial, transition, table):
    """log Z and γ (T, K) by summing over all K^T state paths, from probabilities and a table."""
    steps = table.shape[0]
    log_pi, log_a = np.log(initial), np.log(transition)
    paths = list(itertools.product(range(K), repeat=steps))
    scores = np.array([log_pi[z[0]] + sum(table[t, z[t]] for t in range(steps))
                       + sum(log_a[z[t - 1], z[t]] for t in range(1, steps)) for z in paths])
    log_z = np.logaddexp.reduce(scores)
    gamma = np.zeros((steps, K))
    for p, z in zip(np.exp(scores - log_z), paths, strict=True):
        gamma[np.arange(steps), z] += p
    return log_z, gamma


def test_emission_table_and_posterior_equal_scipy_and_enumeration():
    """A tiny sequence (T = 6, zero rows and a structural zero of B included): the table equals
    scipy's multinomial log-pmf, ℓ and γ equal enumeration of all 3^6 state paths."""
    params = _random_params(np.random.default_rng(1), zero=True)
    x = X[:6].copy()
    x[3] = [2, 0, 1, 0]  # a row state 0 can emit (x_1 = 0 where B_01 = 0)
    x[4] = [0, 1, 0, 0]  # a row it cannot emit
    table, posterior, _ = baum_welch_step(MODEL, params, jnp.asarray(x))
    reference = _scipy_table(x, params.emission)
    assert np.all(np.isfinite(np.asarray(table)[3])) and np.asarray(table)[4, 0] == -np.inf
    np.testing.assert_allclose(table, reference, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(table[:2], 0.0, atol=1e-14)  # n_t = 0: every state emits it surely
    log_z, gamma = _enumerate(params.initial, params.transition, reference)
    np.testing.assert_allclose(posterior.log_likelihood, log_z, rtol=1e-12)
    np.testing.assert_allclose(posterior.marginals, gamma, atol=1e-12)
    per_state = jax.vmap(jax.vmap(MODEL.log_emission, in_axes=(None, None, 0)), in_axes=(None, 0, None))(
        jax.tree_util.tree_map(jnp.asarray, params), jnp.asarray(x), jnp.arange(K))
    np.testing.assert_allclose(per_state, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lengths", [[sum(LENGTHS)], LENGTHS], ids=["one", "several"])
def test_equals_hmmlearn(lengths):
    """Table, ℓ, posteriors and one Baum–Welch step against hmmlearn's MultinomialHMM with
    per-row n_trials (one sequence, and three of different lengths)."""
    params = _random_params(np.random.default_rng(2))
    data = _data(lengths)
    x = X[: sum(lengths)]
    ref = _reference(params, lengths)
    table, posterior, updated = baum_welch_step(MODEL, params, data)
    np.testing.assert_allclose(_real_rows(table, data), ref._compute_log_likelihood(x), rtol=1e-12)
    np.testing.assert_allclose(posterior.log_likelihood, ref.score(x, lengths), rtol=1e-12)
    np.testing.assert_allclose(_real_rows(posterior.marginals, data), ref.predict_proba(x, lengths),
                               atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(x, lengths)
    for ours, theirs in zip(updated, (ref.startprob_, ref.transmat_, ref.emissionprob_), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)


def test_one_trial_per_row_is_the_categorical_hmm_with_priors():
    """With n_t = 1 the rows are one-hot symbols: the multinomial HMM is the categorical HMM
    (same ℓ, the coefficient is 0) and its MAP M-step with Dirichlet priors on π, A and B
    (concentrations above and below 1) is the categorical one."""
    priors = {"initial_prior": 2.0, "transition_prior": 0.7, "emission_prior": 2.5}
    multi = jaxem.models.multinomial_hmm(K, M, **priors)
    cat = jaxem.models.categorical_hmm(K, M, **priors)
    symbols = np.random.default_rng(3).integers(0, M, size=sum(LENGTHS))
    params = _random_params(np.random.default_rng(4))
    one_hot = jaxem.Sequences.from_concatenated(np.eye(M, dtype=np.int64)[symbols], LENGTHS)
    labels = jaxem.Sequences.from_concatenated(symbols, LENGTHS)
    _, posterior, updated = baum_welch_step(multi, params, one_hot)
    _, cat_posterior, cat_updated = baum_welch_step(cat, CategoricalHMMParams(*params), labels)
    np.testing.assert_allclose(posterior.log_likelihood, cat_posterior.log_likelihood, rtol=1e-12)
    for ours, theirs in zip(updated, cat_updated, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(multi.log_prior(updated), cat.log_prior(cat_updated), rtol=1e-12)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), prior=st.floats(1.0, 3.0))
def test_em_never_decreases_the_objective(seed, prior):
    """On random models and data drawn from them (5 trials per step), 15 EM steps from a random
    start never lower ℓ + log-prior (Dirichlet priors on A and B)."""
    rng = np.random.default_rng(seed)
    truth = _random_params(rng)
    data_params = jax.tree_util.tree_map(jnp.asarray, truth)
    x, _ = MODEL.sample(jax.random.PRNGKey(seed % 1000), data_params, 30, 5)  # n_t = 5 for every t
    np.testing.assert_array_equal(np.asarray(x).sum(1), 5)
    model = jaxem.models.multinomial_hmm(K, M, emission_prior=prior, transition_prior=prior)
    result = jaxem.fit(model, x, _random_params(rng), max_iter=15, tol=0.0)
    history = np.asarray(result.history)
    assert result.finite
    assert np.all(np.diff(history) >= -1e-10 * np.abs(history[1:]))


def test_coordinates_round_trip():
    """unconstrain/constrain are inverse, keep a structural zero at exactly 0, and give
    num_parameters free coordinates."""
    params = jax.tree_util.tree_map(jnp.asarray, _random_params(np.random.default_rng(5), zero=True))
    round_trip = jax.jit(lambda p: (MODEL.unconstrain(p), MODEL.constrain(MODEL.unconstrain(p))))
    coordinates, back = round_trip(params)
    assert isinstance(coordinates, jaxem.models.MultinomialHMMCoordinates)
    assert coordinates.emission_logits.shape == (K, M - 1)
    for ours, theirs in zip(back, params, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert back.emission[0, 1] == 0.0
    flat = jax.flatten_util.ravel_pytree(coordinates)[0]
    assert flat.size == MODEL.num_parameters()
    assert int(np.sum(np.isfinite(np.asarray(flat)))) == MODEL.num_parameters() - 1  # the zero is -inf


def test_sampling_and_initialisation():
    """Sampled rows sum to their n_t (one per step here; one int for all in the monotonicity
    test) and their per-state symbol frequencies are B_k; init gives valid starting points
    without zeros that ignore padding."""
    params = MultinomialHMMParams(np.array([0.5, 0.3, 0.2]),
                                  np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]),
                                  np.array([[0.7, 0.1, 0.1, 0.1], [0.0, 0.1, 0.5, 0.4], [0.25] * 4]))
    trials = np.arange(3000) % 7
    x, z = MODEL.sample(jax.random.PRNGKey(0), params, 3000, jnp.asarray(trials))
    x, z = np.asarray(x), np.asarray(z)
    np.testing.assert_array_equal(x.sum(1), trials)
    assert np.all(x[z == 1][:, 0] == 0)
    for k in range(K):
        np.testing.assert_allclose(x[z == k].sum(0) / trials[z == k].sum(), params.emission[k], atol=0.03)

    pieces = [x[:40], x[40:65]]
    padded = jaxem.Sequences.from_list(pieces, max_length=50)
    values = np.array(padded.values)
    values[0, 40:] = 100  # other padding values change nothing
    values[1, 25:] = 100
    repadded = jaxem.Sequences(jnp.asarray(values), padded.lengths)
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    a, b = init_many(MODEL, keys, padded), init_many(MODEL, keys, repadded)
    for leaf_a, leaf_b in zip(a, b, strict=True):
        np.testing.assert_allclose(leaf_a, leaf_b, rtol=1e-12)
    MODEL.check_params(jax.tree_util.tree_map(lambda v: v[0], a))
    assert np.all(np.asarray(a.emission) > 0) and np.all(np.asarray(a.transition) > 0)
    assert not np.allclose(a.emission[0], a.emission[1])


def test_bad_input_is_refused_by_name():
    params = _random_params(np.random.default_rng(6))
    with pytest.raises(ValueError, match=r"^data: expected count vectors of shape \(T, 4\)"):
        MODEL.check_data(jnp.asarray(X[:, :3]))
    with pytest.raises(ValueError, match=r"^data: .*np.eye\(4"):
        MODEL.check_data(jnp.asarray(X[:, 0]))
    with pytest.raises(ValueError, match=r"^data: counts must be non-negative whole numbers"):
        MODEL.check_data(jnp.asarray(X - 1))
    with pytest.raises(ValueError, match=r"^data: counts must be non-negative whole numbers"):
        MODEL.check_data(jnp.asarray(X + 0.5))
    with pytest.raises(TypeError, match=r"^data: expected integer"):
        MODEL.check_data(jnp.asarray(X > 0))
    with pytest.raises(ValueError, match=r"^params.emission: expected shape \(3, 4\)"):
        MODEL.check_params(params._replace(emission=params.emission[:, :3]))
    with pytest.raises(ValueError, match=r"^params.emission\[1\]: sums to"):
        MODEL.check_params(params._replace(emission=params.emission * np.array([[1.0], [2.0], [1.0]])))
    with pytest.raises(TypeError, match=r"^params: expected MultinomialHMMParams"):
        MODEL.check_params(CategoricalHMMParams(*params))
    with pytest.raises(ValueError, match=r"^num_trials: expected one int or shape \(5,\)"):
        MODEL.sample(jax.random.PRNGKey(0), params, 5, np.ones(4, int))
    with pytest.raises(TypeError, match=r"^num_trials: expected integers"):
        MODEL.sample(jax.random.PRNGKey(0), params, 5, np.ones(5))
    with pytest.raises(ValueError, match=r"^num_trials: must be >= 0"):
        MODEL.sample(jax.random.PRNGKey(0), params, 5, -1)
    with pytest.raises(ValueError, match="^emission_prior"):
        jaxem.models.multinomial_hmm(K, M, emission_prior=-1.0)
    with pytest.raises(ValueError, match="^num_symbols"):
        jaxem.models.multinomial_hmm(K, 0)
    with pytest.raises(ValueError, match="^method"):
        MODEL.init(jax.random.PRNGKey(0), jnp.asarray(X), method="best")
