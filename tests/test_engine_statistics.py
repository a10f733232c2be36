"""Expected sufficient statistics, sample weights, hyperparameters as leaves, model-owned priors.

Oracles: the statistics of the whole data against the sum of those of its parts (and a padded
batch against the unpadded one); one `maximize` against `fit(max_iter=1)`; a weighted fit against
the fit to the data with each row repeated w_n times (weights drawn as multinomial counts summing
to N, so both fits have the same shapes, zero weights included: a zero weight is a removed row);
compile events counted by `jax.monitoring` for new hyperparameter values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import GMM_K, GMM_N, clustered_data
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxem as em
from jaxem.models import categorical_hmm, gaussian_hmm, gaussian_mixture, poisson_hmm

KINDS = ("full", "diag", "spherical", "tied")
GMMS = {kind: gaussian_mixture(GMM_K, kind) for kind in KINDS}
X = jnp.asarray(clustered_data(np.random.default_rng(7), GMM_K, GMM_N, 2))
WEIGHT_ITERS = 8


def assert_tree_close(a, b, rtol, atol=0.0):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def tree_sum(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


# --- statistics --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_mixture_statistics_add_over_chunks_and_maximize_is_one_em_step(kind):
    model = GMMS[kind]
    params = model.init(jax.random.key(1), X)
    whole = model.expected_stats(params, X)
    parts = [model.expected_stats(params, X[a:b]) for a, b in ((0, 17), (17, 40), (40, GMM_N))]
    scale = jax.tree_util.tree_map(lambda s: np.max(np.abs(np.asarray(s))), whole)
    summed = tree_sum(tree_sum(parts[0], parts[1]), parts[2])
    for w, s, c in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(summed),
                       jax.tree_util.tree_leaves(scale), strict=True):
        np.testing.assert_allclose(np.asarray(w), np.asarray(s), rtol=0, atol=1e-10 * c)
    stepped = model.maximize(whole, params)
    assert_tree_close(stepped, em.fit(model, X, params, max_iter=1, tol=0.0).params, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_statistics_add_over_chunks_too(kind):
    """float32 centres each component at its current mean (a function of θ), so parts add up."""
    model = GMMS[kind]
    x32 = X.astype(jnp.float32)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), model.init(jax.random.key(1), X))
    whole = model.expected_stats(params, x32)
    summed = tree_sum(model.expected_stats(params, x32[:23]), model.expected_stats(params, x32[23:]))
    # float32 rounding of a sum of N terms of size |x| (a first moment near 0 has no scale of its own)
    rounding = 1e-6 * GMM_N * float(jnp.max(jnp.abs(x32)))
    for w, s in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(summed), strict=True):
        np.testing.assert_allclose(np.asarray(w), np.asarray(s), rtol=0,
                                   atol=1e-5 * np.max(np.abs(w)) + rounding)
    stepped = model.maximize(whole, params)
    from_sum = model.maximize(summed, params)
    assert_tree_close(from_sum, stepped, rtol=1e-4, atol=1e-6)


def hmm_cases():
    rng = np.random.default_rng(11)
    lengths = [9, 5, 12, 7]
    gauss = [rng.normal(size=(n, 2)) + 3 * (np.arange(n) % 2)[:, None] for n in lengths]
    symbols = [rng.integers(0, 3, size=n) for n in lengths]
    counts = [rng.poisson(4.0, size=(n, 2)) for n in lengths]
    cases = [(f"gaussian-{kind}", gaussian_hmm(2, kind), gauss) for kind in KINDS]
    cases.append(("categorical", categorical_hmm(2, 3), symbols))
    cases.append(("poisson", poisson_hmm(2), counts))
    return cases


HMM_CASES = hmm_cases()


@pytest.mark.parametrize("name,model,sequences", HMM_CASES, ids=[c[0] for c in HMM_CASES])
def test_hmm_statistics_add_over_sequence_batches_and_ignore_padding(name, model, sequences):
    batch = em.Sequences.from_list(sequences, max_length=12)
    params = model.init(jax.random.key(2), batch)
    whole = model.expected_stats(params, batch)
    first = model.expected_stats(params, em.Sequences.from_list(sequences[:2], max_length=12))
    second = model.expected_stats(params, em.Sequences.from_list(sequences[2:], max_length=12))
    more_padding = model.expected_stats(params, em.Sequences.from_list(sequences, max_length=20))
    assert_tree_close(tree_sum(first, second), whole, rtol=1e-10, atol=1e-10)
    assert_tree_close(more_padding, whole, rtol=1e-10, atol=1e-10)
    stepped = model.maximize(whole, params)
    assert_tree_close(stepped, em.fit(model, batch, params, max_iter=1, tol=0.0).params, rtol=1e-10,
                      atol=1e-12)


# --- weights -----------------------------------------------------------------------------------------


def multinomial_weights(seed: int, n: int) -> np.ndarray:
    """Integer weights summing to n (many zeros and repeats)."""
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n))


@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31 - 1))
def test_integer_weights_fit_as_duplicated_rows(kind, seed):
    model = GMMS[kind]
    weights = multinomial_weights(seed, GMM_N)
    repeated = jnp.asarray(np.repeat(np.asarray(X), weights, axis=0))
    start = model.init(jax.random.key(seed % 97), repeated)
    weighted = em.fit(model, X, start, weights=weights, max_iter=WEIGHT_ITERS, tol=0.0)
    duplicated = em.fit(model, repeated, start, max_iter=WEIGHT_ITERS, tol=0.0)
    np.testing.assert_allclose(weighted.history, duplicated.history, rtol=1e-9)
    assert_tree_close(weighted.params, duplicated.params, rtol=1e-7, atol=1e-9)
    # The tolerance scales with Σ w: both stop at the same iteration (the same compiled programs).
    weighted = em.fit(model, X, start, weights=weights, max_iter=WEIGHT_ITERS, tol=1e-2)
    duplicated = em.fit(model, repeated, start, max_iter=WEIGHT_ITERS, tol=1e-2)
    assert int(weighted.num_iters) == int(duplicated.num_iters)
    assert bool(weighted.converged) == bool(duplicated.converged)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_weights_fit_as_removed_rows(kind):
    model = GMMS[kind]
    weights = np.ones(GMM_N)
    weights[::4] = 0.0
    kept = X[weights > 0]
    start = model.init(jax.random.key(3), kept)
    weighted = em.fit(model, X, start, weights=weights, max_iter=WEIGHT_ITERS, tol=0.0)
    removed = em.fit(model, kept, start, max_iter=WEIGHT_ITERS, tol=0.0)
    np.testing.assert_allclose(weighted.history, removed.history, rtol=1e-10)
    assert_tree_close(weighted.params, removed.params, rtol=1e-8, atol=1e-10)
    assert float(model.log_likelihood(start, X, weights)) == pytest.approx(
        float(model.log_likelihood(start, kept)), rel=1e-12)


HMM_SEQUENCES = [np.random.default_rng(5 + b).integers(0, 3, size=10) for b in range(4)]
HMM_MODEL = categorical_hmm(2, 3)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_per_sequence_weights_fit_as_duplicated_sequences(seed):
    weights = multinomial_weights(seed, len(HMM_SEQUENCES))
    batch = em.Sequences.from_list(HMM_SEQUENCES)
    repeated = em.Sequences.from_list([s for s, w in zip(HMM_SEQUENCES, weights, strict=True)
                                       for _ in range(w)])
    start = HMM_MODEL.init(jax.random.key(seed % 89), batch)
    weighted = em.fit(HMM_MODEL, batch, start, weights=weights, max_iter=WEIGHT_ITERS, tol=0.0)
    duplicated = em.fit(HMM_MODEL, repeated, start, max_iter=WEIGHT_ITERS, tol=0.0)
    np.testing.assert_allclose(weighted.history, duplicated.history, rtol=1e-10)
    assert_tree_close(weighted.params, duplicated.params, rtol=1e-8, atol=1e-12)


def poisson_log_joint(params, x, z):
    rate = jnp.exp(params["log_rates"][z])
    return jax.nn.log_softmax(params["logits"])[z] + em.families.poisson_logpmf(x, rate)


CUSTOM = em.Mixture(poisson_log_joint, 2)   # Gradient M-step (the default without a closed form)
COUNTS = jnp.asarray(np.r_[np.random.default_rng(0).poisson(1.0, 12),
                           np.random.default_rng(1).poisson(7.0, 12)])
CUSTOM_START = {"logits": jnp.zeros(2), "log_rates": jnp.log(jnp.array([0.5, 4.0]))}


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_weights_in_a_custom_gradient_mixture_equal_duplicated_rows(seed):
    weights = multinomial_weights(seed, COUNTS.shape[0])
    repeated = jnp.asarray(np.repeat(np.asarray(COUNTS), weights))
    weighted = em.fit(CUSTOM, COUNTS, CUSTOM_START, weights=weights, max_iter=WEIGHT_ITERS, tol=0.0)
    duplicated = em.fit(CUSTOM, repeated, CUSTOM_START, max_iter=WEIGHT_ITERS, tol=0.0)
    np.testing.assert_allclose(weighted.history, duplicated.history, rtol=1e-8)
    assert_tree_close(weighted.params, duplicated.params, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("weights,message", [
    (np.full(GMM_N, -1.0), r"^weights\[0\]: is -1.0; weights must be finite and >= 0"),
    (np.r_[np.nan, np.ones(GMM_N - 1)], r"^weights\[0\]: is nan"),
    (np.ones(GMM_N + 1), r"^weights: expected shape \(60,\)"),
    (np.zeros(GMM_N), r"^weights: all weights are zero"),
])
def test_bad_weights_are_refused_by_name(weights, message):
    model = GMMS["full"]
    params = model.init(jax.random.key(0), X)
    for call in (lambda: em.fit(model, X, params, weights=weights),
                 lambda: model.log_likelihood(params, X, weights),
                 lambda: model.expected_stats(params, X, weights),
                 lambda: em.em_step(model).init(params, X, weights)):
        with pytest.raises(ValueError, match=message):
            call()


# --- hyperparameters are leaves; the model owns its objective ---------------------------------------

COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: COMPILES.append(event)
    if event == "/jax/core/compile/backend_compile_duration" else None)


def test_new_hyperparameter_values_compile_nothing_new():
    x = X[:41]   # shapes used nowhere else, so the first fit here compiles and the others must not
    start = GMMS["diag"].init(jax.random.key(0), x)
    before = len(COMPILES)
    jax.block_until_ready(em.fit(gaussian_mixture(GMM_K, "diag", reg_covar=1e-6), x, start, max_iter=7))
    assert len(COMPILES) > before   # the counter sees compilations
    before = len(COMPILES)
    for reg in (1e-4, 1e-2, 0.3, 1, np.float32(0.5)):
        result = em.fit(gaussian_mixture(GMM_K, "diag", reg_covar=reg), x, start, max_iter=7)
        jax.block_until_ready(result)
        assert np.all(np.asarray(result.params.covariances) >= reg)
    assert len(COMPILES) == before
    symbols = jnp.asarray(np.random.default_rng(0).integers(0, 3, size=33))
    hmm_start = categorical_hmm(2, 3).init(jax.random.key(0), symbols)
    before = len(COMPILES)
    jax.block_until_ready(em.fit(categorical_hmm(2, 3, transition_prior=2.0), symbols, hmm_start, max_iter=7))
    assert len(COMPILES) > before
    before = len(COMPILES)
    for strength in (1.5, 3, 10.0):
        model = categorical_hmm(2, 3, transition_prior=strength, emission_prior=strength)
        jax.block_until_ready(em.fit(model, symbols, hmm_start, max_iter=7))
    assert len(COMPILES) == before


def test_a_model_with_priors_is_fitted_map_by_default():
    symbols = jnp.asarray(np.random.default_rng(4).integers(0, 3, size=150))
    model = categorical_hmm(2, 3, transition_prior=3.0)
    start = model.init(jax.random.key(1), symbols)
    result = em.fit(model, symbols, start, max_iter=60, tol=1e-10)
    objective = float(model.log_likelihood(result.params, symbols)) + float(model.log_prior(result.params))
    assert float(model.log_prior(result.params)) != 0.0
    assert float(result.log_likelihood) == pytest.approx(objective, rel=1e-12)
    history = np.asarray(result.history)[: int(result.num_iters)]
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))
    explicit = em.fit(model, symbols, start, log_prior=model.log_prior, max_iter=60, tol=1e-10)
    np.testing.assert_allclose(explicit.history, result.history, rtol=1e-12)
    # the model's default M-step is the MAP one: its fixed point beats the likelihood-only objective
    plain = categorical_hmm(2, 3)
    ml = em.fit(plain, symbols, start, max_iter=60, tol=1e-10)
    assert float(model.log_likelihood(ml.params, symbols) + model.log_prior(ml.params)) <= objective + 1e-9


def test_weighted_restarts_equal_weighted_fits():
    model = GMMS["diag"]
    weights = multinomial_weights(0, GMM_N)
    starts = jax.vmap(lambda k: model.init(k, X))(jax.random.split(jax.random.key(5), 3))
    result = em.fit_restarts(model, X, starts, weights=weights, max_iter=WEIGHT_ITERS, tol=0.0)
    for r in range(3):
        alone = em.fit(model, X, jax.tree_util.tree_map(lambda a, r=r: a[r], starts), weights=weights,
                       max_iter=WEIGHT_ITERS, tol=0.0)
        np.testing.assert_allclose(result.restarts.history[r], alone.history, rtol=1e-10)


@pytest.mark.filterwarnings("ignore:The best of 1 restart")   # 5 iterations: not converged, on purpose
def test_the_faces_reuse_their_programs_for_new_hyperparameter_values():
    from jaxem.sklearn import GaussianMixture

    x = np.asarray(X[:43])
    before = len(COMPILES)
    GaussianMixture(3, covariance_type="diag", reg_covar=1e-6, random_state=0, max_iter=5).fit(x)
    assert len(COMPILES) > before
    before = len(COMPILES)
    for reg in (1e-4, 1e-2):
        fitted = GaussianMixture(3, covariance_type="diag", reg_covar=reg, random_state=0, max_iter=5).fit(x)
        assert np.all(fitted.covariances_ >= reg)
    assert len(COMPILES) == before


def test_a_closed_form_m_step_refuses_a_prior_it_does_not_maximise():
    model = categorical_hmm(2, 3, transition_prior=3.0)
    symbols = jnp.asarray(np.random.default_rng(4).integers(0, 3, size=30))
    start = model.init(jax.random.key(1), symbols)
    with pytest.raises(ValueError, match=r"^log_prior: the model's closed-form M-step"):
        em.fit(model, symbols, start, log_prior=lambda p: jnp.sum(jnp.log(p.emission)))
    em.fit(model, symbols, start, log_prior=model.log_prior, max_iter=3)   # its own prior is fine


def test_a_models_own_prior_must_return_a_scalar():
    model = em.Mixture(poisson_log_joint, 2, log_prior=lambda p: p["log_rates"])
    with pytest.raises(ValueError, match=r"^log_prior \(the model's own\): must return a scalar"):
        em.fit(model, COUNTS, CUSTOM_START)


def test_bad_per_sequence_weights_are_refused_by_name():
    batch = em.Sequences.from_list(HMM_SEQUENCES)
    start = HMM_MODEL.init(jax.random.key(0), batch)
    with pytest.raises(ValueError, match=r"^weights: expected shape \(4,\)"):
        em.fit(HMM_MODEL, batch, start, weights=np.ones(10))
    with pytest.raises(ValueError, match=r"^weights\[2\]: is -1.0"):
        em.fit_restarts(HMM_MODEL, batch, jax.tree_util.tree_map(lambda a: a[None], start),
                        weights=np.array([1.0, 1.0, -1.0, 1.0]))
